"""The checker on histories whose answer is known by hand."""

from __future__ import annotations

import random

from mesh.linearizability import Op, check_history, check_register


def put(c: int, k: str, v: str, t0: float, t1: float | None) -> Op:
    return Op(c, "put", k, t0, t1, value=v)


def get(c: int, k: str, r: str | None, t0: float, t1: float | None) -> Op:
    return Op(c, "get", k, t0, t1, result=r)


def cas(c: int, k: str, exp: str | None, v: str, ok: bool, t0: float, t1: float | None) -> Op:
    return Op(c, "cas", k, t0, t1, value=v, expected=exp, result=ok)


def delete(c: int, k: str, t0: float, t1: float | None) -> Op:
    return Op(c, "delete", k, t0, t1)


def test_empty_and_sequential_histories() -> None:
    assert check_history([]).ok
    h = [put(0, "k", "1", 0, 1), get(0, "k", "1", 2, 3), delete(0, "k", 4, 5), get(0, "k", None, 6, 7)]
    assert check_history(h).ok


def test_stale_read_after_a_completed_write_is_caught() -> None:
    h = [put(0, "k", "1", 0, 1), put(0, "k", "2", 2, 3), get(1, "k", "1", 4, 5)]
    res = check_history(h)
    assert not res.ok and res.key == "k"


def test_concurrent_write_may_be_seen_or_not() -> None:
    h = [put(0, "k", "1", 0, 1), put(1, "k", "2", 2, 10), get(2, "k", "1", 3, 4), get(2, "k", "2", 5, 6)]
    assert check_history(h).ok


def test_reads_must_not_go_back_in_time() -> None:
    # Once some read saw "2", a later read (invoked after it completed) cannot see "1".
    h = [put(0, "k", "1", 0, 1), put(1, "k", "2", 2, 10), get(2, "k", "2", 3, 4), get(3, "k", "1", 5, 6)]
    assert not check_history(h).ok


def test_read_of_a_value_never_written_is_caught() -> None:
    assert not check_history([put(0, "k", "1", 0, 1), get(1, "k", "9", 2, 3)]).ok


def test_cas_results_must_agree_with_the_order() -> None:
    ok = [put(0, "k", "a", 0, 1), cas(1, "k", "a", "b", True, 2, 5), cas(2, "k", "a", "c", False, 3, 6),
          get(0, "k", "b", 7, 8)]
    assert check_history(ok).ok
    both_won = [put(0, "k", "a", 0, 1), cas(1, "k", "a", "b", True, 2, 5), cas(2, "k", "a", "c", True, 3, 6)]
    assert not check_history(both_won).ok


def test_indeterminate_write_may_or_may_not_have_happened() -> None:
    lost = [put(0, "k", "1", 0, 1), put(1, "k", "2", 2, None), get(2, "k", "1", 3, 4)]
    assert check_history(lost).ok
    landed_late = [put(0, "k", "1", 0, 1), put(1, "k", "2", 2, None), get(2, "k", "1", 3, 4), get(2, "k", "2", 9, 10)]
    assert check_history(landed_late).ok
    # ...but it cannot take effect before it was invoked.
    early = [put(0, "k", "1", 0, 1), get(2, "k", "2", 3, 4), put(1, "k", "2", 5, None)]
    assert not check_history(early).ok


def test_indeterminate_cas_may_apply() -> None:
    h = [put(0, "k", "a", 0, 1), cas(1, "k", "a", "b", False, 2, None), get(2, "k", "b", 3, 4)]
    assert check_history(h).ok


def test_keys_are_independent() -> None:
    h = [put(0, "x", "1", 0, 1), put(0, "y", "1", 0, 1), get(1, "x", "1", 2, 3), get(1, "y", None, 2, 3)]
    res = check_history(h)
    assert not res.ok and res.key == "y"


def test_real_time_order_of_non_overlapping_writes() -> None:
    h = [put(0, "k", "1", 0, 1), put(1, "k", "2", 2, 3), get(2, "k", "1", 4, 5)]
    assert not check_register(h).ok
    h2 = [put(0, "k", "1", 0, 3), put(1, "k", "2", 1, 2), get(2, "k", "1", 4, 5)]
    assert check_register(h2).ok


def _sequential_history(rng: random.Random, n: int) -> list[Op]:
    state: dict[str, str] = {}
    ops: list[Op] = []
    t = 0.0
    for i in range(n):
        k = rng.choice("ab")
        kind = rng.choice(["put", "get", "cas", "delete"])
        t0, t1 = t, t + 1
        t += 2
        if kind == "put":
            state[k] = f"v{i}"
            ops.append(put(i % 3, k, f"v{i}", t0, t1))
        elif kind == "get":
            ops.append(get(i % 3, k, state.get(k), t0, t1))
        elif kind == "delete":
            state.pop(k, None)
            ops.append(delete(i % 3, k, t0, t1))
        else:
            exp = state.get(k) if rng.random() < 0.5 else "nope"
            success = state.get(k) == exp
            if success:
                state[k] = f"v{i}"
            ops.append(cas(i % 3, k, exp, f"v{i}", success, t0, t1))
    return ops


def test_random_sequential_histories_pass_and_a_corrupted_read_fails() -> None:
    rng = random.Random(5)
    caught = 0
    for _ in range(50):
        ops = _sequential_history(rng, 40)
        # Stretch intervals so that neighbours overlap: still linearizable (the true order is valid).
        stretched = [Op(o.client, o.kind, o.key, o.invoke, (o.complete or 0) + 2.5, o.value, o.expected, o.result)
                     for o in ops]
        assert check_history(stretched).ok
        reads = [i for i, o in enumerate(ops) if o.kind == "get"]
        if reads:
            i = rng.choice(reads)
            bad = list(ops)
            bad[i] = Op(ops[i].client, "get", ops[i].key, ops[i].invoke, ops[i].complete, result="never-written")
            assert not check_history(bad).ok
            caught += 1
    assert caught > 30


def test_large_concurrent_history_is_checked_quickly() -> None:
    # 12 fully concurrent puts, then a read of one of them: WGL is exponential in concurrency, the
    # (linearized set, state) cache keeps this at most 2^12 x 13 configurations.
    h = [put(i, "k", f"v{i}", 0, 100) for i in range(12)] + [get(99, "k", "v7", 101, 102)]
    assert check_history(h).ok
    h.append(get(99, "k", "v8", 103, 104))
    assert not check_history(h).ok
