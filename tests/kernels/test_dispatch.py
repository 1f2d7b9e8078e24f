"""The dispatch between Triton and the references: measured tables decide, switches force."""

import json
from dataclasses import asdict, replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.kernels import conv, coupling, dispatch, dispatch_table, pyr_common
from flowkit.kernels.dispatch import (
    ENV_VAR,
    KernelMode,
    decide_triton,
    kernel_mode,
    use_kernels,
    use_triton,
)
from flowkit.kernels.dispatch_table import (
    TABLE_DIR,
    DispatchTableError,
    OpFamily,
    ValidationRow,
    family_rows,
    load_table,
    merge_rows,
    size_class,
    validated_row,
    write_table,
)
from flowkit.kernels.pyr_common import PyramidMode

ROW = ValidationRow(
    op="pyr_level", device="NVIDIA H100 80GB HBM3", capability="9.0", precision="float32",
    shape_class="pyramidflow:n<=2^22:fwd", torch="2.11.0", triton="3.6.0",
    date="2026-12-01 10:00 UTC", correct=True, speedup=1.8,
)


@pytest.fixture
def tables(tmp_path, monkeypatch):
    """An empty table folder in place of the shipped one (and Triton counted as installed, so
    that the tests run where it is hidden); returns a writer of rows."""
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    monkeypatch.setenv("FLOWKIT_DISPATCH_TABLES", str(tmp_path))
    monkeypatch.delenv(ENV_VAR, raising=False)
    family_rows.cache_clear()

    def put(family: str, *rows: ValidationRow) -> None:
        write_table(tmp_path / f"{family}.json", rows)
        family_rows.cache_clear()

    yield put
    family_rows.cache_clear()


@pytest.fixture
def on_fake_gpu(monkeypatch):
    """Every tensor counts as on a CUDA device of capability 9.0 (for the decision only)."""
    monkeypatch.setattr(dispatch, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(dispatch, "device_capability", lambda t: "9.0")
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)


def decide(mode=KernelMode.AUTO, on_cuda=True, capability="9.0", **key):
    key = {"op": ROW.op, "precision": ROW.precision, "shape_class": ROW.shape_class} | key
    return decide_triton(mode, on_cuda, capability, OpFamily.PYRAMID, **key)


def test_shipped_tables_hold_no_rows():
    """Nothing has been measured on a GPU: every shipped table is valid and empty."""
    for family in OpFamily:
        assert load_table(TABLE_DIR / f"{family.value}.json") == ()


@pytest.mark.usefixtures("tables")
def test_no_rows_means_reference_on_cuda():
    assert not decide()
    assert not decide(mode=KernelMode.OFF)
    assert decide(mode=KernelMode.ON)  # forced: regardless of the table


def test_a_winning_row_selects_triton_for_its_key_only(tables):
    tables("pyramid", ROW)
    assert decide()
    assert not decide(on_cuda=False, capability=None)  # never off CUDA
    assert not decide(mode=KernelMode.OFF)
    assert not decide(capability="8.0")
    assert not decide(precision="bfloat16")
    assert not decide(shape_class="pyramidflow:n<=2^24:fwd")
    assert not decide(op="pyr_down")


@pytest.mark.parametrize("change", [{"speedup": 0.9}, {"speedup": 1.0}, {"correct": False}])
def test_a_slower_or_wrong_row_keeps_the_reference(tables, change):
    tables("pyramid", replace(ROW, **change))
    assert not decide()
    assert decide(mode=KernelMode.ON)


def test_forcing_on_without_triton_is_an_error(tables, monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(ImportError, match="pip install triton"):
        decide(mode=KernelMode.ON)
    tables("pyramid", ROW)
    assert not decide()  # auto without Triton: the reference, silently correct


def test_mode_from_env_and_context(monkeypatch):
    for word, mode in [("", "auto"), ("auto", "auto"), ("1", "on"), ("force", "on"),
                       ("0", "off"), ("OFF", "off")]:
        monkeypatch.setenv(ENV_VAR, word)
        assert kernel_mode() is KernelMode(mode)
    monkeypatch.setenv(ENV_VAR, "1")
    with use_kernels(False):
        assert kernel_mode() is KernelMode.OFF
        with use_kernels(None):
            assert kernel_mode() is KernelMode.AUTO
        assert kernel_mode() is KernelMode.OFF
    assert kernel_mode() is KernelMode.ON
    monkeypatch.setenv(ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="FLOWKIT_KERNELS='sometimes'.*auto"):
        kernel_mode()
    with pytest.raises(TypeError, match="True, False or None"):
        with use_kernels("yes"):
            pass


def test_use_triton_on_cpu_is_false_even_when_forced(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1")
    assert not use_triton("pyramid", "pyr_down", "float32", "n<=2^14", torch.zeros(2))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "cannot read dispatch table"),
        ('{"rows": 3}', "must be a JSON object"),
        ('{"rows": [1]}', "row 0: expected an object"),
        ('{"rows": [{"op": "pyr_up"}]}', "row 0: missing keys"),
        (json.dumps({"rows": [asdict(ROW) | {"speedup": "fast"}]}), "speedup must be a positive"),
        (json.dumps({"rows": [asdict(ROW) | {"correct": 1}]}), "correct must be true or false"),
        (json.dumps({"rows": [asdict(ROW) | {"extra": 1}]}), r"unknown keys \['extra'\]"),
        (json.dumps({"rows": [asdict(ROW), asdict(ROW)]}), "appear more than once"),
    ],
)
def test_malformed_table_names_the_file(tables, tmp_path, content, match):
    path = tmp_path / "pyramid.json"
    path.write_text(content)
    with pytest.raises(DispatchTableError, match=match) as error:
        decide()
    assert str(path) in str(error.value)


def test_write_merge_and_reload_round_trip(tmp_path):
    other = replace(ROW, precision="bfloat16", speedup=0.7)
    path = tmp_path / "t.json"
    write_table(path, merge_rows([ROW], [other, replace(ROW, speedup=2.5)]))
    rows = load_table(path)
    assert {r.key: r.speedup for r in rows} == {ROW.key: 2.5, other.key: 0.7}
    assert validated_row(rows, *ROW.key) == replace(ROW, speedup=2.5)
    assert validated_row(rows, *other.key) is None
    with pytest.raises(DispatchTableError, match="two rows for one key"):
        write_table(path, [ROW, ROW])


@given(st.integers(1, 2**40))
def test_size_class_is_a_bucket_that_contains_its_count(n):
    label = size_class(n)
    if label.startswith("n>"):
        assert n > 2**28
    else:
        bound = 2 ** int(label.removeprefix("n<=2^"))
        assert n <= bound and (bound == 2**14 or n > bound // 4)


# --- the public ops ask with the right key, and take the reference without a row --------------


@pytest.mark.usefixtures("on_fake_gpu")
def test_ops_take_triton_exactly_where_their_row_wins(tables):
    x = torch.randn(2, 16, 32, 32)
    w = torch.randn(16, 16, 7, 7)
    h = torch.randn(2, 32, 32, 32)
    with torch.no_grad():
        assert conv.conv_backend(x, w) is conv.ConvBackend.REFERENCE
        assert not coupling.use_coupling_kernel("affine_coupling_forward", x, h)
        assert not pyr_common.use_pyramid_kernel("pyr_level", PyramidMode.PYRAMIDFLOW,
                                                 x.numel(), x)
        precision = conv.conv_precision(torch.float32)
        rows = {
            "conv": replace(ROW, op="large_kernel_conv2d", precision=precision,
                            shape_class=conv.conv_shape_class(x, w, grad=False)),
            "coupling": replace(ROW, op="affine_coupling_forward",
                                shape_class=coupling.coupling_shape_class(x, grad=False)),
            "pyramid": replace(ROW, shape_class=pyr_common.pyramid_shape_class(
                x.numel(), PyramidMode.PYRAMIDFLOW, grad=False)),
        }
        for family, row in rows.items():
            tables(family, row)
        assert conv.conv_backend(x, w) is conv.ConvBackend.TRITON
        assert coupling.use_coupling_kernel("affine_coupling_forward", x, h)
        assert not coupling.use_coupling_kernel("affine_coupling_inverse", x, h)
        assert pyr_common.use_pyramid_kernel("pyr_level", PyramidMode.PYRAMIDFLOW, x.numel(), x)
        assert not pyr_common.use_pyramid_kernel("pyr_level", PyramidMode.GAUSSIAN,
                                                 x.numel(), x)
        with use_kernels(False):
            assert conv.conv_backend(x, w) is conv.ConvBackend.REFERENCE
    # with a gradient the pass is fwd_bwd: the fwd rows do not apply
    assert conv.conv_backend(x, w.requires_grad_()) is conv.ConvBackend.REFERENCE
    assert not coupling.use_coupling_kernel("affine_coupling_forward", x, h.requires_grad_())


@pytest.mark.usefixtures("on_fake_gpu", "tables")
def test_forced_conv_still_needs_a_supported_shape():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 7, 7)
    with use_kernels(True):
        assert conv.conv_backend(x, w) is conv.ConvBackend.TRITON
        for unsupported in (w[:, :, :6, :6], w[:3], w.double()):
            assert conv.conv_backend(x.to(unsupported.dtype), unsupported) is \
                conv.ConvBackend.REFERENCE
        assert conv.conv_backend(x, w, None, "leaky_relu", -0.1) is conv.ConvBackend.REFERENCE


@pytest.mark.usefixtures("tables")
def test_public_ops_on_cpu_run_the_reference_even_when_forced(monkeypatch):
    """A CPU run never reaches a Triton launcher (whose import is lazy)."""
    monkeypatch.setenv(ENV_VAR, "1")
    x, h = torch.randn(1, 2, 8, 8), torch.randn(1, 4, 8, 8)
    y, _ = coupling.affine_coupling_forward(x, h, 2.0)
    expected, _ = coupling.affine_coupling_forward_reference(x, h, 2.0)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert dispatch_table.family_rows(OpFamily.COUPLING) == ()
