"""Action tokenizers: bins and FAST round trips with asserted error bounds, statistics, persistence, CLI."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from unimask.tokenizers.action import (
    ActionClippingWarning,
    ActionDecodeError,
    ActionNormalizer,
    ActionTokenizerError,
    BinActionTokenizer,
    FASTActionTokenizer,
    chunk_episode,
    chunk_episodes,
    load_action_tokenizer,
)
from unimask.tokenizers.action.fast import _byte_to_char

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


def actions_arrays(min_rows: int = 1, max_rows: int = 40, max_dim: int = 5):
    shapes = st.tuples(st.integers(min_rows, max_rows), st.integers(1, max_dim))
    return hnp.arrays(np.float64, shapes, elements=finite)


def smooth_episodes(n: int, steps: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.normal(scale=0.1, size=(steps, dim)), axis=0) * rng.uniform(0.5, 3.0, size=dim)
            for _ in range(n)]


# ----- normalisation ----------------------------------------------------------------------------------------------
@PROPERTY
@given(x=actions_arrays(), q=st.tuples(st.floats(0.0, 0.49), st.floats(0.51, 1.0)))
def test_quantile_stats_match_numpy(x, q):
    norm = ActionNormalizer("quantile", low_quantile=q[0], high_quantile=q[1]).fit(x)
    np.testing.assert_array_equal(norm.low, np.quantile(x, q[0], axis=0))
    np.testing.assert_array_equal(norm.high, np.quantile(x, q[1], axis=0))
    minmax = ActionNormalizer("minmax").fit(x[None])  # leading axes are pooled
    np.testing.assert_array_equal(minmax.low, x.min(axis=0))
    np.testing.assert_array_equal(minmax.high, x.max(axis=0))


def test_quantile_stats_ignore_padded_steps():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6, 3))
    valid = rng.random((30, 6)) > 0.3
    x[~valid] = 1e6  # padding that must not leak into the statistics
    norm = ActionNormalizer().fit(x, valid)
    np.testing.assert_array_equal(norm.low, np.quantile(x[valid], 0.01, axis=0))
    np.testing.assert_array_equal(norm.high, np.quantile(x[valid], 0.99, axis=0))


@PROPERTY
@given(x=actions_arrays(max_dim=4), data=st.data())
def test_excluded_dims_pass_through(x, data):
    dim = x.shape[1]
    excluded = data.draw(st.lists(st.integers(0, dim - 1), unique=True, max_size=dim))
    x = x.copy()
    x[:, excluded] = np.clip(x[:, excluded] / 1e3, -1, 1)  # excluded dims are already in [-1, 1]
    norm = ActionNormalizer("minmax", exclude_dims=excluded).fit(x)
    y, clipped = norm.normalize(x)
    np.testing.assert_array_equal(y[:, excluded], x[:, excluded])
    np.testing.assert_array_equal(norm.denormalize(y)[:, excluded], x[:, excluded])
    assert clipped.sum() == 0
    tok = BinActionTokenizer(n_bins=64, norm="minmax", exclude_dims=excluded).fit(x)
    err = np.abs(tok.decode(tok.encode(x), dtype=np.float64) - x)[:, excluded]
    assert np.all(err <= 1 / 64 + 1e-12)


def test_constant_dimension_is_safe():
    x = np.stack([np.linspace(-2, 5, 50), np.full(50, 3.25), np.linspace(0, 1, 50)], axis=1)
    for tok in (BinActionTokenizer(norm="minmax"), FASTActionTokenizer(bpe_vocab_size=300, norm="minmax")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no divide-by-zero RuntimeWarning, no clipping warning
            chunks = x.reshape(5, 10, 3)
            tok.fit(chunks)
            rec = tok.decode(tok.encode(chunks), dtype=np.float64)
        assert np.all(rec[..., 1] == 3.25)
    off = chunks[0].copy()
    off[0, 1] = 4.0  # a constant dimension has no range: any other value is out of range
    with pytest.warns(ActionClippingWarning, match="clipped 1 of 30"):
        _, info = tok.encode(off, return_info=True)
    assert info.clipped_per_dim == [0, 1, 0]


# ----- bins -------------------------------------------------------------------------------------------------------
@PROPERTY
@given(x=actions_arrays(), n_bins=st.integers(2, 1024), mode=st.sampled_from(["minmax", "quantile"]))
def test_bin_round_trip_within_half_bin(x, n_bins, mode):
    tok = BinActionTokenizer(n_bins=n_bins, norm=mode).fit(x)
    low, high = tok.normalizer.low, tok.normalizer.high
    x = x[np.all((x >= low) & (x <= high), axis=1)]  # in-range data only (quantile bounds drop the tails)
    if len(x) == 0:
        return
    codes = tok.encode(x)
    assert codes.dtype == np.int64 and codes.shape == x.shape
    assert codes.min() >= 0 and codes.max() < n_bins == tok.vocab_size
    rec = tok.decode(codes, dtype=np.float64)
    y, _ = tok.normalizer.normalize(x)
    y_rec, _ = tok.normalizer.normalize(rec, clip=False)
    assert np.abs(y_rec - y).max() <= tok.bin_width / 2 + 1e-9
    assert np.all(np.abs(rec - x) <= (high - low) / n_bins * (1 + 1e-9) + 1e-9)


def test_bin_clipping_is_counted_and_warned():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(200, 3))
    tok = BinActionTokenizer(norm="minmax").fit(x)
    test = x[:20].copy()
    test[:4, 0] = 5.0
    test[7, 2] = -9.0
    with pytest.warns(ActionClippingWarning, match="clipped 5 of 60"):
        codes, info = tok.encode(test, return_info=True)
    assert info.n_clipped == 5 and info.clipped_per_dim == [4, 0, 1]
    assert np.all(codes[:4, 0] == tok.n_bins - 1) and codes[7, 2] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = tok.encode(x, return_info=True)  # the fit data itself is in range under min/max
    assert info.n_clipped == 0


def test_bin_invalid_codes_raise_or_fall_back_explicitly():
    tok = BinActionTokenizer(n_bins=16, norm="minmax").fit(np.array([[0.0, -1.0], [2.0, 1.0]]))
    codes = np.array([[[3, 4], [16, 0], [1, -1]]])
    with pytest.raises(ActionDecodeError, match="outside"):
        tok.decode(codes)
    with pytest.warns(UserWarning, match="replaced 2 invalid time steps"):
        actions, info = tok.decode(codes, on_error="hold", hold_action=[0.5, 0.25], return_info=True)
    assert info.n_failed == 2 and info.on_error == "hold"
    np.testing.assert_allclose(actions[0, 1:], [[0.5, 0.25], [0.5, 0.25]])


# ----- FAST ------------------------------------------------------------------------------------------------------
@PROPERTY
@given(horizon=st.integers(1, 16), dim=st.integers(1, 4), n=st.integers(2, 40),
       scale=st.floats(0.5, 300.0), seed=st.integers(0, 2**16), smooth=st.booleans())
def test_fast_round_trip_error_bound(horizon, dim, n, scale, seed, smooth):
    """Bound (normalised space, no clipping): rounding moves each DCT coefficient by <= 1/(2 scale); the inverse DCT
    is orthonormal, so per dimension the time-domain error has L2 norm <= sqrt(H)/(2 scale): RMS over time
    <= 1/(2 scale) and every value within sqrt(H)/(2 scale)."""
    rng = np.random.default_rng(seed)
    if smooth:
        chunks = np.cumsum(rng.normal(size=(n, horizon, dim)), axis=1)
    else:
        chunks = rng.uniform(-50, 50, size=(n, horizon, dim))
    tok = FASTActionTokenizer(scale=scale, bpe_vocab_size=300, norm="minmax").fit(chunks)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActionClippingWarning)  # min/max bounds: the fit data is in range
        codes = tok.encode(chunks)
    assert all(0 <= c < tok.pad_code for seq in codes for c in seq)
    rec = tok.decode(codes, dtype=np.float64)
    assert rec.shape == chunks.shape
    y, _ = tok.normalizer.normalize(chunks)
    y_rec, _ = tok.normalizer.normalize(rec, clip=False)
    err = np.abs(y_rec - y)
    bound_max, bound_rms = tok.error_bound()
    assert bound_max == pytest.approx(math.sqrt(horizon) / (2 * scale))
    assert err.max() <= bound_max + 1e-9
    assert np.sqrt((err ** 2).mean(axis=1)).max() <= bound_rms + 1e-9


def test_fast_error_shrinks_with_scale_and_compresses_smooth_chunks():
    chunks, valid = chunk_episodes(smooth_episodes(20, 60, 3, seed=0), horizon=10)
    errors = []
    for scale in (2.0, 20.0, 200.0):
        tok = FASTActionTokenizer(scale=scale, bpe_vocab_size=512, norm="minmax").fit(chunks, valid)
        codes, info = tok.encode(chunks, return_info=True)
        y, _ = tok.normalizer.normalize(chunks)
        y_rec, _ = tok.normalizer.normalize(tok.decode(codes, dtype=np.float64), clip=False)
        errors.append(np.abs(y_rec - y).max())
        if scale == 20.0:
            # BPE must beat one token per coefficient on smooth motion (the point of FAST)
            assert info.tokens_per_chunk.mean() < 0.5 * 10 * 3
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] <= math.sqrt(10) / (2 * 200.0)


@pytest.fixture(scope="module")
def fast_tok():
    chunks, valid = chunk_episodes(smooth_episodes(10, 40, 2, seed=3), horizon=8)
    return FASTActionTokenizer(scale=10.0, bpe_vocab_size=400, norm="minmax").fit(chunks, valid), chunks


def test_byte_table_matches_hugging_face():
    from tokenizers import pre_tokenizers

    table = _byte_to_char()
    assert len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_fast_invalid_sequences_raise(fast_tok):
    tok, chunks = fast_tok
    good = tok.encode(chunks[0])
    size = len(tok._id_bytes)
    byte_id = {b: tok._bpe.token_to_id(c) for b, c in _byte_to_char().items()}
    n_values = tok.horizon * tok.action_dim
    cases = [  # (sequence, what the message must name)
        (good[:-1], "coefficients"),  # a dropped token
        (good + [good[-1]], "coefficients"),  # an extra token
        ([], "coefficients"),
        ([-1] + good, "not in the BPE vocabulary"),
        (good[:1] + [tok.pad_code] + good[1:], "padding may only trail"),
        (good[:-1] + [byte_id[0x80]], "valid characters"),  # a lone UTF-8 continuation byte
        ([byte_id[ord("~")]] * n_values, "alphabet"),  # '~' = 126 > 2M = 2 * ceil(10 * sqrt(8)) = 58
    ]
    if size < tok.bpe_vocab_size:
        cases.append(([size] + good, "not in the BPE vocabulary"))
    for seq, message in cases:
        with pytest.raises(ActionDecodeError, match=message):
            tok.decode(seq)
    with pytest.raises(ActionDecodeError):  # out of range even for the pad slot
        tok.decode(np.array([[tok.vocab_size] + good]))


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(st.integers(0, 450), max_size=30))
def test_fast_random_codes_decode_or_raise(fast_tok, seq):
    tok, _ = fast_tok
    try:
        out = tok.decode(seq, dtype=np.float64)
    except ActionDecodeError:
        return
    assert out.shape == (tok.horizon, tok.action_dim) and np.all(np.isfinite(out))


def test_fast_fallbacks_are_explicit_and_reported(fast_tok):
    tok, chunks = fast_tok
    codes = tok.encode(chunks[:3], length=40)
    codes[1, 0] = tok.pad_code  # pad before real codes: invalid
    with pytest.raises(ActionDecodeError, match="chunk 1"):
        tok.decode(codes)
    with pytest.warns(UserWarning, match="1 of 3 chunks"):
        zeros, info = tok.decode(codes, on_error="zeros", return_info=True)
    assert info.on_error == "zeros" and info.failed.tolist() == [False, True, False] and "chunk 1" in info.errors[0]
    assert np.all(zeros[1] == 0) and np.any(zeros[0] != 0)
    hold = np.array([0.3, -0.7])
    with pytest.warns(UserWarning):
        held = tok.decode(codes, on_error="hold", hold_action=hold)
    np.testing.assert_allclose(held[1], np.tile(hold, (tok.horizon, 1)))
    np.testing.assert_array_equal(held[0], zeros[0])
    with pytest.raises(ActionTokenizerError, match="hold_action"):
        tok.decode(codes, on_error="hold")


def test_fast_fixed_length_pads_and_reports(fast_tok):
    tok, chunks = fast_tok
    ragged = tok.encode(chunks)
    longest = max(len(s) for s in ragged)
    assert tok.suggest_length(chunks) == longest
    fixed, info = tok.encode(chunks, length=longest + 2, return_info=True)
    assert fixed.shape == (len(chunks), longest + 2) and info.n_truncated == 0
    assert np.all(fixed[:, -2:] == tok.pad_code)
    np.testing.assert_array_equal(tok.decode(fixed), tok.decode(ragged))
    short = int(np.median([len(s) for s in ragged]))
    with pytest.warns(UserWarning, match="truncated"):
        cut, info = tok.encode(chunks, length=short, return_info=True)
    expected = np.mean([len(s) > short for s in ragged])
    assert info.n_truncated > 0 and info.truncated_fraction == pytest.approx(expected)
    with pytest.warns(UserWarning, match="invalid and replaced"):
        _, dinfo = tok.decode(cut, on_error="zeros", return_info=True)
    np.testing.assert_array_equal(dinfo.failed, [len(s) > short for s in ragged])


# ----- persistence ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bins", "fast"])
def test_save_load_reproduces_codes(tmp_path, kind):
    chunks, valid = chunk_episodes(smooth_episodes(8, 30, 3, seed=7), horizon=6)
    tok = (BinActionTokenizer(n_bins=128, exclude_dims=[2]) if kind == "bins"
           else FASTActionTokenizer(scale=25.0, bpe_vocab_size=350, exclude_dims=[2]))
    chunks[..., 2] = np.clip(chunks[..., 2], -1, 1)
    tok.fit(chunks, valid)
    tok.save_pretrained(tmp_path)
    loaded = load_action_tokenizer(tmp_path)
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ActionClippingWarning)
        a, b = tok.encode(chunks), loaded.encode(chunks)
    if kind == "bins":
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b
    np.testing.assert_array_equal(tok.decode(a), loaded.decode(b))
    assert type(tok).from_pretrained(tmp_path).normalizer.exclude_dims == [2]


def test_missing_statistics_refuse_to_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 5, 2))
    tok = FASTActionTokenizer(bpe_vocab_size=300).fit(x)
    tok.save_pretrained(tmp_path)
    path = tmp_path / "action_tokenizer.json"
    original = json.loads(path.read_text())
    for corrupt in ("drop_low", "short_high", "nan", "drop_horizon"):
        data = json.loads(json.dumps(original))
        if corrupt == "drop_low":
            del data["normalizer"]["low"]
        elif corrupt == "short_high":
            data["normalizer"]["high"] = data["normalizer"]["high"][:1]
        elif corrupt == "nan":
            data["normalizer"]["low"][0] = None
        else:
            del data["settings"]["horizon"]
        path.write_text(json.dumps(data))
        with pytest.raises(ActionTokenizerError):
            load_action_tokenizer(tmp_path)
    path.write_text(json.dumps(original))
    with pytest.raises(ActionTokenizerError, match="not 'bins'"):
        BinActionTokenizer.from_pretrained(tmp_path)
    (tmp_path / "fast_bpe.json").unlink()
    with pytest.raises(FileNotFoundError, match="fast_bpe.json"):
        load_action_tokenizer(tmp_path)


def test_unfitted_tokenizers_refuse(tmp_path):
    for tok in (BinActionTokenizer(), FASTActionTokenizer()):
        with pytest.raises(ActionTokenizerError, match="not fitted"):
            tok.decode(np.zeros((2, 3), dtype=np.int64))
        with pytest.raises(ActionTokenizerError, match="not fitted"):
            tok.encode(np.zeros((4, 3)))
        with pytest.raises(ActionTokenizerError, match="not fitted"):
            tok.save_pretrained(tmp_path)


def test_bad_inputs_name_the_problem():
    tok = BinActionTokenizer().fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ActionTokenizerError, match="fitted on 3"):
        tok.encode(np.zeros((4, 2)))
    with pytest.raises(ActionTokenizerError, match="NaN"):
        tok.encode(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ActionTokenizerError, match="n_bins"):
        BinActionTokenizer(n_bins=1)
    with pytest.raises(ActionTokenizerError, match="bpe_vocab_size"):
        FASTActionTokenizer(bpe_vocab_size=100)
    with pytest.raises(ActionTokenizerError, match="too large"):
        FASTActionTokenizer(scale=1e5, bpe_vocab_size=300).fit(np.zeros((2, 4, 1)))
    fast = FASTActionTokenizer(bpe_vocab_size=300).fit(np.random.default_rng(0).normal(size=(5, 4, 2)))
    with pytest.raises(ActionTokenizerError, match="horizon 4"):
        fast.encode(np.zeros((2, 5, 2)))


# ----- chunking ---------------------------------------------------------------------------------------------------
@PROPERTY
@given(steps=st.integers(1, 30), dim=st.integers(1, 3), horizon=st.integers(1, 12), stride=st.integers(1, 4),
       pad=st.sampled_from(["last", "zeros", "none"]))
def test_chunk_episode_padding_and_mask(steps, dim, horizon, stride, pad):
    ep = np.arange(steps * dim, dtype=np.float64).reshape(steps, dim) + 1.0
    if pad == "none" and steps < horizon:
        assert chunk_episode(ep, horizon, stride, pad)[0].shape[0] == 0
        return
    chunks, valid = chunk_episode(ep, horizon, stride, pad)
    starts = list(range(0, (steps - horizon if pad == "none" else steps - 1) + 1, stride))
    assert chunks.shape == (len(starts), horizon, dim) and valid.shape == (len(starts), horizon)
    for n, s in enumerate(starts):
        for h in range(horizon):
            t = s + h
            assert valid[n, h] == (t < steps)
            if t < steps:
                np.testing.assert_array_equal(chunks[n, h], ep[t])
            elif pad == "last":
                np.testing.assert_array_equal(chunks[n, h], ep[-1])
            else:
                assert np.all(chunks[n, h] == 0)


# ----- CLI --------------------------------------------------------------------------------------------------------
def test_fit_actions_cli_on_npz(tmp_path, capsys):
    from unimask.cli import main

    episodes = np.stack(smooth_episodes(12, 40, 4, seed=11)).astype(np.float32)
    episodes[..., 3] = np.sign(episodes[..., 3]).clip(-1, 1)  # a gripper-like dimension in [-1, 1]
    data = tmp_path / "episodes.npz"
    np.savez(data, actions=episodes)

    out = tmp_path / "bins"
    assert main(["fit-actions", "--kind", "bins", "--data", str(data), "--out", str(out), "--horizon", "8",
                 "--norm", "minmax", "--exclude-dims", "3"]) == 0
    printed = capsys.readouterr().out
    assert "vocab_size (its share of the unified vocabulary) = 256" in printed and "(excluded)" in printed
    summary = json.loads((out / "fit_summary.json").read_text())
    span = episodes.reshape(-1, 4).max(0) - episodes.reshape(-1, 4).min(0)
    assert np.all(np.array(summary["max_abs_error"])[:3] <= span[:3] / 256 * (1 + 1e-6))
    np.testing.assert_allclose(load_action_tokenizer(out).normalizer.low[:3], episodes.reshape(-1, 4).min(0)[:3])

    out = tmp_path / "fast"
    assert main(["fit-actions", "--kind", "fast", "--data", str(data), "--out", str(out), "--horizon", "8",
                 "--scale", "20", "--bpe-vocab-size", "400", "--length", "12"]) == 0
    printed = capsys.readouterr().out
    assert "tokens per chunk: mean" in printed and "fixed length 12" in printed
    summary = json.loads((out / "fit_summary.json").read_text())
    tok = load_action_tokenizer(out)
    assert isinstance(tok, FASTActionTokenizer) and tok.vocab_size == 401 == summary["vocab_size"]
    assert 0 < summary["mean_tokens_per_chunk"] < 32 and 0 <= summary["fraction_not_fitting"] <= 1


def test_fit_actions_cli_on_shards(tmp_path, capsys):
    import webdataset as wds

    from unimask.cli import main

    episodes = smooth_episodes(6, 20, 3, seed=5)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(shard_dir / f"train-{shard:04d}.tar")) as sink:
            for i in range(shard * 3, shard * 3 + 3):
                buf = io.BytesIO()
                np.save(buf, episodes[i].astype(np.float32))
                sink.write({"__key__": f"ep{i:03d}", "actions.npy": buf.getvalue(), "txt": "move"})
            sink.write({"__key__": "noactions", "txt": "caption only"})
    out = tmp_path / "bins"
    assert main(["fit-actions", "--kind", "bins", "--data", str(shard_dir), "--out", str(out), "--horizon", "4",
                 "--norm", "minmax"]) == 0
    captured = capsys.readouterr()
    assert "6 episodes" in captured.out and "skipped 2 samples" in captured.err
    tok = load_action_tokenizer(out)
    allx = np.concatenate(episodes).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(tok.normalizer.high, allx.max(0))
