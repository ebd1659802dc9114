import pytest

from metalbench.expr import ExprError, evaluate, names_in


def test_arithmetic_and_helpers():
    env = {"n": 9728, "BN": 64, "k": 95}
    assert evaluate("ceil_div(n, BN)", env) == 152
    assert evaluate("ceil_div(k, 4) * 4", env) == 96
    assert evaluate("min(n, 100) + max(1, 2) - abs(-3)", env) == 99
    assert evaluate("n // BN % 7", env) == (9728 // 64) % 7
    assert evaluate(64, env) == 64


def test_logic_comparisons_and_strings():
    env = {"transpose_b": True, "layout": "nt", "m": 1, "k": 96}
    assert evaluate("transpose_b == (layout == 'nt')", env) is True
    assert evaluate("m == 1 and k % 4 == 0", env) is True
    assert evaluate("1 <= m < 2", env) is True
    assert evaluate("not transpose_b or m > 1", env) is False
    assert evaluate("4 if m == 1 else 8", env) == 4


@pytest.mark.parametrize("text", ["__import__('os')", "n.real", "[1, 2]", "lambda: 1", "n if"])
def test_rejects_anything_else(text):
    with pytest.raises(ExprError):
        evaluate(text, {"n": 1})


def test_unknown_name_lists_known_ones():
    with pytest.raises(ExprError, match="unknown name 'q'.*known: n"):
        evaluate("q + 1", {"n": 1})


def test_names_in():
    assert names_in("ceil_div(n, BN) * batch") == {"n", "BN", "batch"}
    assert names_in(3) == set()


@pytest.mark.parametrize("text, needle", [
    ("9**9**9", "out of range"),
    ("2**70", "out of range"),
    ("n * 2**40 * 2**30", "out of range"),
    ("'a' * 10000000000", "arithmetic takes numbers"),
    ("layout + 'x'", "arithmetic takes numbers"),
    ("min(layout, 2)", "arithmetic takes numbers"),
    ("-layout", "arithmetic takes numbers"),
])
def test_values_are_bounded_and_arithmetic_is_on_numbers(text, needle):
    with pytest.raises(ExprError, match=needle):
        evaluate(text, {"n": 5, "layout": "nt"})
