"""KEDA's external scaler over gRPC: the generated code of KEDA's proto (``proto/``), the
servicer that reads the snapshot (:mod:`adapter.keda.scaler`) and its TLS server
(:mod:`adapter.keda.server`)."""
