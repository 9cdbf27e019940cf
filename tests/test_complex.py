"""Complex dtypes (complex64, complex128): records and op_model Functions are checked with
torch's convention for the gradient of a real loss, the conjugate Wirtinger derivative
``dL/dx + i dL/dy`` (what ``torch.autograd.grad`` returns for a complex leaf), where
``grad_outputs=g`` differentiates ``Re(sum(conj(g) * y))``.  A case is judged in the real
view (``torch.view_as_real``): the oracles and tolerances are the real ones, at the real
counterpart's dtype.  A backward that returns the unconjugated derivative fails, and the
diagnosis names conjugation and the tensor."""
import pytest
import torch

from gradcheck_suite import ERROR, FAIL, PASS, Case, Dim, Model, check_case, op_model, run_model
from gradcheck_suite.run.report import case_message

DIMS = {"N": Dim(1, 5, 4), "M": Dim(1, 4, 3)}
SIZES = ({"N": 1, "M": 1}, {"N": 4, "M": 3}, {"N": 3, "M": 1})
SCALES = (1e-3, 1.0, 1e3)
DTYPES = ("complex64", "complex128")
SHAPES = {"z": ("N", "M"), "w": ("N", "M")}


def test_torchs_convention_is_the_real_views_gradient():
    """The convention the check rests on, on the installed torch: for a complex output y and an
    upstream gradient g, torch.autograd.grad gives dL/dx + i dL/dy of L = Re(sum(conj(g) * y)),
    which is the gradient of the real view's <g, y>."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, generator=gen, dtype=torch.complex128, requires_grad=True)
    w = torch.randn(3, generator=gen, dtype=torch.complex128)
    g = torch.randn(3, generator=gen, dtype=torch.complex128)
    grad, = torch.autograd.grad(torch.exp(z) * w, z, grad_outputs=g)

    def loss(x):
        return float((g.conj() * torch.exp(x) * w).real.sum())

    h, est = 1e-6, torch.zeros(3, dtype=torch.complex128)
    for k in range(3):
        e = torch.zeros(3, dtype=torch.complex128)
        e[k] = h
        x = z.detach()
        est[k] = complex((loss(x + e) - loss(x - e)) / (2 * h), (loss(x + 1j * e) - loss(x - 1j * e)) / (2 * h))
    assert torch.allclose(grad, est, rtol=1e-8, atol=1e-9)
    xr = torch.view_as_real(z.detach()).clone().requires_grad_(True)
    real_grad, = torch.autograd.grad((torch.view_as_real(torch.exp(torch.view_as_complex(xr)) * w)
                                      * torch.view_as_real(g)).sum(), xr)
    assert torch.allclose(real_grad, torch.view_as_real(grad))


# -- a plain record: holomorphic, y = z^2 * w + 3 z ----------------------------------------------------

def _holo_forward(p, d):
    zz = p.z * p.z
    return zz * p.w + 3 * p.z, zz


def _holo_backward(p, d, zz, g):
    return {"z": g * (2 * p.z * p.w + 3).conj(), "w": g * zz.conj()}


def _holo_unconjugated(p, d, zz, g):
    return {"z": g * (2 * p.z * p.w + 3).conj(), "w": g * zz}   # the derivative, not its conjugate


def _holo_one_element(p, d, e, g):
    grads = _holo_backward(p, d, e, g)
    grads["z"][-1, -1] *= 1 + 1e-5          # a relative error of 1e-5 in one element
    return grads


def _holo(backward=_holo_backward, dtype="complex128", name="holo"):
    return Model(name=name, dims=DIMS, params=SHAPES, forward=_holo_forward, backward=backward, dtype=dtype)


# -- a real loss of complex inputs: |z|^2 weighted by a real tensor, Re(z * w), |w| ------------------------

def _real_of_complex_forward(p, d):
    return ((p.z.abs() ** 2) * p.r).sum() + (p.z * p.w).real.sum() + p.w.abs().sum(), None


def _real_of_complex_backward(p, d, cache, g):
    return {"z": g * (2 * p.r * p.z + p.w.conj()),
            "w": g * (p.z.conj() + p.w / p.w.abs()),
            "r": g * p.z.abs() ** 2}


def _real_factor(dims, gen, dtype, scale):          # a real tensor in a complex record
    return torch.randn(dims["N"], dims["M"], generator=gen, dtype=torch.float64) * scale


def _real_of_complex(dtype="complex64"):
    return Model(name="real_of_complex", dims=DIMS, params={**SHAPES, "r": ("N", "M")},
                 forward=_real_of_complex_forward, backward=_real_of_complex_backward, dtype=dtype,
                 factories={"r": _real_factor})


# -- autograd.Functions ---------------------------------------------------------------------------

class MulExp(torch.autograd.Function):
    """z * exp(w): holomorphic in both."""

    @staticmethod
    def forward(ctx, z, w):
        y = z * torch.exp(w)
        ctx.save_for_backward(z, w, y)
        return y

    @staticmethod
    def backward(ctx, g):
        z, w, y = ctx.saved_tensors
        return g * torch.exp(w).conj(), g * y.conj()


class MulExpUnconjugated(MulExp):
    @staticmethod
    def backward(ctx, g):
        z, w, y = ctx.saved_tensors
        return g * torch.exp(w).conj(), g * y        # the derivative, not its conjugate


class AbsSquared(torch.autograd.Function):
    """|z|^2 + Re(w): a real output of complex inputs."""

    @staticmethod
    def forward(ctx, z, w):
        ctx.save_for_backward(z)
        return z.real ** 2 + z.imag ** 2 + w.real

    @staticmethod
    def backward(ctx, g):
        z, = ctx.saved_tensors
        return 2 * g * z, g.to(z.dtype)


def _mul_exp(op=MulExp, dtype="complex64", name="mul_exp"):
    return op_model(op, inputs=SHAPES, dims=DIMS, dtype=dtype, name=name,
                    reference=lambda z, w: z * torch.exp(w),
                    scales={"w": (1e-3, 2.0)})      # exp(w) overflows beyond


def _abs_squared(dtype="complex64"):
    return op_model(AbsSquared, inputs=SHAPES, dims=DIMS, dtype=dtype, name="abs_squared",
                    reference=lambda z, w: z.abs() ** 2 + w.real)


CORRECT = {"record, holomorphic": _holo, "record, real of complex": _real_of_complex,
           "Function, holomorphic": _mul_exp, "Function, real output": _abs_squared}


def _case(m, dims, dtype, scale, seed=3):
    return Case(m.name, dims, dtype, "cpu", seed, scale)


@pytest.mark.parametrize("make", CORRECT.values(), ids=CORRECT.keys())
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_correct_complex_backward_passes_at_every_scale_and_size(make, dtype):
    m = make(dtype=dtype)
    for dims in SIZES:
        for scale in SCALES:
            res = check_case(m, _case(m, dims, dtype, scale))
            assert res.verdict == PASS, (dims, scale, res.verdict, res.problems, res.tensors)
            assert not res.internal


@pytest.mark.parametrize("make", CORRECT.values(), ids=CORRECT.keys())
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_correct_complex_backward_passes_a_whole_run(make, dtype):
    run = run_model(make(dtype=dtype), dtype=dtype, examples=12)
    assert run.failure is None and not run.problems, (run.problems, run.failure and run.failure.problems)
    assert run.checked >= 10


def test_a_real_tensor_in_a_complex_record_keeps_its_real_counterpart():
    m = _real_of_complex("complex64")
    res = check_case(m, _case(m, {"N": 2, "M": 2}, "complex64", 1.0))
    assert res.verdict == PASS, res.problems
    assert any("compared in the real view" in n and "w, z" in n for n in res.notes), res.notes


@pytest.mark.parametrize("make, tensor", [(lambda dt: _holo(_holo_unconjugated, dt, "holo_unconjugated"), "w"),
                                          (lambda dt: _mul_exp(MulExpUnconjugated, dt, "mul_exp_unconjugated"), "w")],
                         ids=["record", "Function"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_unconjugated_derivative_fails_naming_conjugation_and_the_tensor(make, tensor, dtype):
    run = run_model(make(dtype), dtype=dtype, examples=10)
    res = run.failure
    assert res is not None and res.verdict == FAIL, run.problems
    assert res.failing == [tensor]
    mistakes = {k.tensor: k for k in res.diagnosis}
    assert mistakes[tensor].mistake == "conjugate"
    text = case_message(res)
    assert (f"the manual gradient of {tensor} is the conjugate of autograd's: torch expects the conjugate "
            "Wirtinger derivative") in " ".join(text.split()), text
    assert f"--dtype {dtype}" in text


def test_a_relative_error_of_1e_5_in_one_element_fails_in_complex128():
    m = _holo(_holo_one_element, "complex128", "holo_one_element")
    res = check_case(m, _case(m, {"N": 4, "M": 3}, "complex128", 1.0))
    assert res.verdict == FAIL, (res.verdict, res.problems)
    assert res.failing == ["z"]
    run = run_model(m, dtype="complex128", examples=10)
    assert run.failure is not None and run.failure.failing == ["z"]


def test_the_same_error_passes_nowhere_it_should_not():
    """The correct record beside the one-element error, on the very case: a pass, so the
    failure above is the error's."""
    m = _holo(_holo_backward, "complex128")
    assert check_case(m, _case(m, {"N": 4, "M": 3}, "complex128", 1.0)).verdict == PASS


def test_a_real_gradient_for_a_complex_tensor_is_an_error_naming_it():
    def real_grad(p, d, e, g):
        return {"z": (g * (2 * p.z * p.w + 3).conj()).real, "w": g * e.conj()}

    m = _holo(real_grad, "complex128", "holo_real_grad")
    res = check_case(m, _case(m, {"N": 2, "M": 2}, "complex128", 1.0))
    assert res.verdict == ERROR and not res.internal, res.problems
    assert res.problems[0].startswith("backward returned a float64 tensor of shape (2, 2) for z, a complex128 tensor")


def test_a_gradient_of_another_complex_dtype_is_an_error_in_complex_terms():
    def single(p, d, zz, g):
        return {n: t.to(torch.complex64) for n, t in _holo_backward(p, d, zz, g).items()}

    m = _holo(single, "complex128", "holo_single")
    res = check_case(m, _case(m, {"N": 2, "M": 2}, "complex128", 1.0))
    assert res.verdict == ERROR and not res.internal, res.problems
    assert res.problems[0] == "z: gradient dtype complex64, expected complex128"


def test_a_complex_output_beside_a_real_one_in_a_tuple():
    def forward(p, d):
        return (p.z * p.w, (p.z.abs() ** 2).sum(-1)), None

    def backward(p, d, cache, g):
        gy, gs = g
        return {"z": gy * p.w.conj() + 2 * gs[:, None] * p.z, "w": gy * p.z.conj()}

    m = Model(name="pair", dims=DIMS, params=SHAPES, forward=forward, backward=backward, dtype="complex64")
    for dims in SIZES:
        res = check_case(m, _case(m, dims, "complex64", 1.0))
        assert res.verdict == PASS, (dims, res.problems)


class MulExpWithJvp(MulExp):
    @staticmethod
    def jvp(ctx, z_t, w_t):
        raise NotImplementedError


def test_stages_that_take_real_tensors_only_are_left_out_with_a_note():
    m = _mul_exp(MulExpWithJvp, dtype="complex128")
    m = Model(**{**{f: getattr(m, f) for f in m.__dataclass_fields__}, "double_backward": True, "compile": True})
    case = Case(m.name, {"N": 2, "M": 2}, "complex128", "cpu", 3, 1.0, compile="aot_eager")
    res = check_case(m, case)
    assert res.verdict == PASS and not res.internal, res.problems
    left = [n for n in res.notes if "stage is not run on complex tensors" in n]
    assert {n.split(" stage")[0].split("the ", 1)[1] for n in left} == {"layouts", "batched", "compiled",
                                                                        "forward mode"}, res.notes
    plain = check_case(_mul_exp(dtype="complex128"), case)      # no jvp: nothing to say of forward mode
    assert not any("forward mode" in n for n in plain.notes), plain.notes


class MulExpDetached(MulExp):
    """Right first derivatives, computed from detached values: its second derivative is wrong."""

    @staticmethod
    def backward(ctx, g):
        z, w, y = ctx.saved_tensors
        return g * torch.exp(w).detach().conj(), g * y.detach().conj()


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_double_backward_of_a_complex_function_is_checked(dtype):
    right = op_model(MulExp, inputs=SHAPES, dims=DIMS, dtype=dtype, name="mul_exp", double_backward=True,
                     reference=lambda z, w: z * torch.exp(w), scales={"w": (1e-3, 2.0)})
    wrong = op_model(MulExpDetached, inputs=SHAPES, dims=DIMS, dtype=dtype, name="mul_exp_detached",
                     double_backward=True, reference=lambda z, w: z * torch.exp(w), scales={"w": (1e-3, 2.0)})
    for dims in SIZES:
        for scale in SCALES:
            res = check_case(right, _case(right, dims, dtype, scale))
            assert res.verdict == PASS, (dims, scale, res.problems)
            res = check_case(wrong, _case(wrong, dims, dtype, scale))
            assert res.verdict == FAIL and "w (double backward)" in res.failing, (dims, scale, res.verdict)


def test_a_domain_is_refused_for_a_complex_dtype():
    with pytest.raises(Exception, match="domain.z.*complex64 draws complex ones"):
        Model(name="bad_domain", dims=DIMS, params=SHAPES, forward=_holo_forward, backward=_holo_backward,
              dtype="complex64", domain={"z": (0.0, None)})


class ProductAndNorm(torch.autograd.Function):
    """(z * w, |z|^2): a complex output and a real one; unused outputs reach the backward as None."""

    @staticmethod
    def forward(ctx, z, w):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, w)
        return z * w, z.real ** 2 + z.imag ** 2

    @staticmethod
    def backward(ctx, gy, gs):
        z, w = ctx.saved_tensors
        gz, gw = torch.zeros_like(z), torch.zeros_like(w)
        if gy is not None:
            gz, gw = gz + gy * w.conj(), gw + gy * z.conj()
        if gs is not None:
            gz = gz + 2 * gs * z
        return gz, gw


class ProductAndNormDropsNorm(ProductAndNorm):
    """Right with both outputs used; with the product unused, it forgets the norm's term."""

    @staticmethod
    def backward(ctx, gy, gs):
        z, w = ctx.saved_tensors
        if gy is None:
            return torch.zeros_like(z), torch.zeros_like(w)
        return ProductAndNorm.backward(ctx, gy, gs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_unused_complex_output_reaches_the_backward_as_the_engine_passes_it(dtype):
    def record(op, name):
        return op_model(op, inputs=SHAPES, dims=DIMS, dtype=dtype, name=name,
                        reference=lambda z, w: (z * w, z.abs() ** 2))

    right, wrong = record(ProductAndNorm, "product_and_norm"), record(ProductAndNormDropsNorm, "drops_norm")
    for dims in SIZES:
        for scale in SCALES:
            res = check_case(right, _case(right, dims, dtype, scale))
            assert res.verdict == PASS, (dims, scale, res.problems, res.summary)
            assert not any("unused outputs stage" in n for n in res.notes)
            res = check_case(wrong, _case(wrong, dims, dtype, scale))
            assert res.verdict == FAIL and res.failing == ["z (output 0 unused)"], (dims, scale, res.verdict)
            assert res.summary.startswith("the manual gradient of z is wrong with output 0 of 2 unused")


MODEL_FILE = '''
import torch
from gradcheck_suite import Dim, op_model


class Mul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, w):
        ctx.save_for_backward(z, w)
        return z * w

    @staticmethod
    def backward(ctx, g):
        z, w = ctx.saved_tensors
        return g * w.conj(), g * z          # w's: z not conjugated


mul = op_model(Mul, name="mul", inputs={"z": ("N",), "w": ("N",)}, dims={"N": Dim(1, 6, 4)},
               reference=lambda z, w: z * w, dtype="complex128")
'''


def test_the_command_prints_the_dtype_and_reproduces_with_it(tmp_path):
    from tests.test_cli import flat, gcs
    path = tmp_path / "complex_mul.py"
    path.write_text(MODEL_FILE)
    done = gcs("check", "--models-from", path, "--dtype", "complex64", "--examples", "5", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    out = flat(done.stdout)
    assert "complex64" in out.split("mul:", 1)[0]          # the table's dtype column
    assert "the manual gradient of w is the conjugate of autograd's" in out
    assert "--dtype complex64" in out


@torch.library.custom_op("gradcheck_tests::complex_square", mutates_args=())
def complex_square(z: torch.Tensor) -> torch.Tensor:
    return z * z


@complex_square.register_fake
def _(z):
    return torch.empty_like(z)


def _square_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _square_backward(ctx, g):
    (z,) = ctx.saved_tensors
    return g * (2 * z).conj()


complex_square.register_autograd(_square_backward, setup_context=_square_context)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_complex_custom_op_passes_and_opcheck_takes_it(dtype):
    m = op_model(complex_square, inputs={"z": ("N", "M")}, dims=DIMS, dtype=dtype, name="complex_square",
                 reference=lambda z: z * z, opcheck=True)
    for dims in SIZES:
        for scale in SCALES:
            res = check_case(m, _case(m, dims, dtype, scale))
            assert res.verdict == PASS, (dims, scale, res.problems)


REAL_AND_COMPLEX = (MODEL_FILE + '''

def _square_fwd(p, d):
    return (p.w * p.w).sum(), None


def _square_bwd(p, d, cache, g):
    return {"w": 2 * g * p.w}


real_square = Model(name="real_square", dims={"N": Dim(1, 4, 2)}, params={"w": ("N",)}, forward=_square_fwd,
                    backward=_square_bwd)
''').replace("from gradcheck_suite import Dim, op_model", "from gradcheck_suite import Dim, Model, op_model")


def test_a_complex_dtype_leaves_out_records_written_for_real_numbers(tmp_path):
    """Their backward is a real derivation; complex inputs make another function of it, so
    --dtype complex128 checks only the records written for complex numbers, and says so."""
    from tests.test_cli import flat, gcs
    path = tmp_path / "mixed.py"
    path.write_text(REAL_AND_COMPLEX)
    done = gcs("check", "real_square", "mul", "--models-from", path, "--dtype", "complex128", "--examples", "3",
               cwd=tmp_path)
    out = flat(done.stdout)
    assert "complex128: 1 record written for real numbers not checked (real_square)" in out, out
    assert "mul:" in out and "real_square:" not in out
    assert done.returncode == 1           # mul's w is wrong


def test_pytest_skips_a_real_record_asked_in_complex(pytester):
    pytester.makepyfile(models=REAL_AND_COMPLEX,
                        test_grads="def test_backward(gradcheck_target):\n    gradcheck_target.check()\n")
    result = pytester.runpytest("--gradcheck-models-from", "models.py", "--gradcheck-models", "real_square",
                                "--gradcheck-dtype", "complex128", "--gradcheck-device", "cpu", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*real_square: not checked in complex128: the record is written for real numbers*"])
