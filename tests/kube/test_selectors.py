"""Label-selector grammar and matching, as apimachinery pkg/labels/selector.go defines them."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from adapter.kube.selectors import Operator, Selector, SelectorError

PROD_RESNET = {"namespace": "prod", "model": "resnet", "deployment": "resnet-a"}


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        pytest.param("", "", id="empty-is-everything"),
        pytest.param("   ", "", id="whitespace-is-everything"),
        pytest.param("model=resnet", "model=resnet", id="equals"),
        pytest.param("model==resnet", "model==resnet", id="double-equals"),
        pytest.param("model!=resnet", "model!=resnet", id="not-equals"),
        pytest.param("env in (b,a)", "env in (a,b)", id="in-sorted-values"),
        pytest.param("env notin (a)", "env notin (a)", id="notin"),
        pytest.param("gpu", "gpu", id="exists"),
        pytest.param("!gpu", "!gpu", id="not-exists"),
        pytest.param(
            " model = resnet ,  !gpu ", "!gpu,model=resnet", id="whitespace-sorted-by-key"
        ),
        pytest.param("z=1,a=2", "a=2,z=1", id="requirements-sorted-by-key"),
        pytest.param("model=", "model=", id="equals-empty-value"),
        pytest.param("model==,gpu", "gpu,model==", id="double-equals-empty-value"),
        pytest.param("model in ()", "model in ()", id="empty-set-is-empty-value"),
        pytest.param("model in (a,,b)", "model in (,a,b)", id="double-comma-adds-empty"),
        pytest.param("model in (a,)", "model in (,a)", id="trailing-comma-adds-empty"),
        pytest.param("in in (notin)", "in in (notin)", id="keywords-as-key-and-value"),
        pytest.param("replicas>3", "replicas>3", id="greater-than"),
        pytest.param("replicas<3", "replicas<3", id="less-than"),
        pytest.param(
            "app.kubernetes.io/name=triton", "app.kubernetes.io/name=triton", id="prefixed-key"
        ),
        pytest.param("k=" + "v" * 63, "k=" + "v" * 63, id="value-63-chars"),
        pytest.param("k" * 63, "k" * 63, id="key-name-63-chars"),
        pytest.param("a\tin\n(x)", "a in (x)", id="tabs-and-newlines"),
    ],
)
def test_valid_selectors_parse_to_canonical_form(text: str, canonical: str) -> None:
    selector = Selector.parse(text)
    assert str(selector) == canonical
    assert selector.source == text


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        pytest.param("model in (a", 11, "expected: ',' or ')'", id="unclosed-paren"),
        pytest.param("model in a", 9, "expected: '('", id="in-without-paren"),
        pytest.param("model=a b", 8, "expected: ',' or end of string", id="two-values"),
        pytest.param("=a", 0, "expected: '!', a label key", id="no-key"),
        pytest.param("a,", 2, "a label key after ','", id="trailing-comma"),
        pytest.param("a,,b", 2, "a label key after ','", id="empty-requirement"),
        pytest.param("a b", 2, "expected one of: =, ==, !=, in, notin", id="missing-operator"),
        pytest.param("a=b=c", 3, "expected: ',' or end of string", id="double-operator"),
        pytest.param("!a=b", 2, "after '!a'", id="not-exists-with-value"),
        pytest.param("!", 1, "expected: a label key", id="bare-bang"),
        pytest.param("-a=b", 0, "invalid label key '-a'", id="key-starts-with-dash"),
        pytest.param("a" * 64, 0, "no more than 63 characters", id="key-name-too-long"),
        pytest.param("A.com/b=c", 0, "prefix part must be a lowercase", id="uppercase-prefix"),
        pytest.param("/b=c", 0, "prefix part must be non-empty", id="empty-prefix"),
        pytest.param("a/=c", 0, "name part must be non-empty", id="empty-name"),
        pytest.param("a/b/c=d", 0, "more than one '/'", id="two-slashes"),
        pytest.param("a=-b", 2, "invalid value '-b'", id="value-starts-with-dash"),
        pytest.param("a=b-", 2, "invalid value 'b-'", id="value-ends-with-dash"),
        pytest.param("a=" + "v" * 64, 2, "no more than 63 characters", id="value-too-long"),
        pytest.param("a in (x,-y)", 8, "invalid value '-y'", id="bad-value-in-set"),
        pytest.param("a in (x=y)", 7, "expected: ',' or ')'", id="operator-in-set"),
        pytest.param("a>b", 2, "must be an integer", id="gt-non-integer"),
        pytest.param("a<99999999999999999999", 2, "must be an integer", id="lt-overflows-int64"),
    ],
)
def test_invalid_selectors_name_position_and_problem(
    text: str, position: int, fragment: str
) -> None:
    with pytest.raises(SelectorError) as caught:
        Selector.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert f"at position {position}:" in message
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        pytest.param("", {}, True, id="everything-matches-empty"),
        pytest.param("", PROD_RESNET, True, id="everything-matches-any"),
        pytest.param("model=resnet", PROD_RESNET, True, id="equals-match"),
        pytest.param("model=bert", PROD_RESNET, False, id="equals-mismatch"),
        pytest.param("gpu=", PROD_RESNET, False, id="equals-empty-needs-key"),
        pytest.param("gpu=", {"gpu": ""}, True, id="equals-empty-value"),
        pytest.param("model==resnet", PROD_RESNET, True, id="double-equals"),
        pytest.param("model!=resnet", PROD_RESNET, False, id="not-equals-mismatch"),
        pytest.param("model!=bert", PROD_RESNET, True, id="not-equals-match"),
        pytest.param("gpu!=a100", PROD_RESNET, True, id="not-equals-absent-key-matches"),
        pytest.param("model in (bert,resnet)", PROD_RESNET, True, id="in-match"),
        pytest.param("model in (bert)", PROD_RESNET, False, id="in-mismatch"),
        pytest.param("gpu in (a100)", PROD_RESNET, False, id="in-absent-key"),
        pytest.param("model notin (bert)", PROD_RESNET, True, id="notin-match"),
        pytest.param("model notin (resnet)", PROD_RESNET, False, id="notin-mismatch"),
        pytest.param("gpu notin (a100)", PROD_RESNET, True, id="notin-absent-key-matches"),
        pytest.param("model", PROD_RESNET, True, id="exists"),
        pytest.param("gpu", PROD_RESNET, False, id="exists-absent"),
        pytest.param("!gpu", PROD_RESNET, True, id="not-exists"),
        pytest.param("!model", PROD_RESNET, False, id="not-exists-present"),
        pytest.param("model=resnet,deployment=resnet-b", PROD_RESNET, False, id="and-one-fails"),
        pytest.param("model=resnet,deployment=resnet-a", PROD_RESNET, True, id="and-all-match"),
        pytest.param("replicas>3", {"replicas": "4"}, True, id="gt-match"),
        pytest.param("replicas>3", {"replicas": "3"}, False, id="gt-equal"),
        pytest.param("replicas>3", {"replicas": "four"}, False, id="gt-non-integer-label"),
        pytest.param("replicas>3", {}, False, id="gt-absent"),
        pytest.param("replicas<3", {"replicas": "-1"}, True, id="lt-negative-label"),
    ],
)
def test_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Selector.parse(text).matches(labels) is expected


def test_everything_matches_all_and_has_no_requirements() -> None:
    selector = Selector.everything()
    assert selector.is_everything()
    assert selector.source == ""
    assert selector.matches({"namespace": "prod"})
    assert Selector.parse("model=resnet").is_everything() is False


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        # url.Values.Encode() as the kube-aggregator re-encodes the HPA's query
        pytest.param("labelSelector=env+in+%28a%2Cb%29", "env in (a,b)", id="in-set"),
        pytest.param("labelSelector=queue%3Dworker_tasks", "queue=worker_tasks", id="equals"),
        pytest.param("labelSelector=%21gpu%2Cmodel%21%3Dbert", "!gpu,model!=bert", id="negations"),
        pytest.param(
            "labelSelector=env+notin+%28a%2Cb%29%2Cmodel", "env notin (a,b),model", id="notin"
        ),
    ],
)
def test_form_decoded_aggregator_queries_parse(query: str, canonical: str) -> None:
    (text,) = parse_qs(query)["labelSelector"]
    assert str(Selector.parse(text)) == canonical


def test_requirement_structure_of_set_operator() -> None:
    (requirement,) = Selector.parse("env notin (b, a)").requirements
    assert requirement.key == "env"
    assert requirement.operator is Operator.NOT_IN
    assert requirement.values == frozenset({"a", "b"})


def test_a_selector_sent_again_is_not_parsed_again() -> None:
    text = "deployment=triton-cache-check,model in (a,b)"
    first = Selector.parse(text)
    assert Selector.parse(text) is first  # an HPA sends the same text every sync
    assert Selector.parse("deployment=triton-cache-check") is not first


def test_a_bad_selector_is_an_error_every_time_it_is_sent() -> None:
    for _ in range(2):  # errors are not cached into a value
        with pytest.raises(SelectorError):
            Selector.parse("deployment in (a")
