"""Kubernetes vocabulary, below serving: label selectors and label validation, Quantity, the
client factory, and the TokenReview/SubjectAccessReview calls of delegated auth. The HTTP
layer (``adapter.api``), discovery and the config all use it; it uses none of them."""
