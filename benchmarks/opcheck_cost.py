"""What ``torch.library.opcheck`` adds to the check of one custom op, interleaved:

    python benchmarks/opcheck_cost.py [--rounds 3]

The op is y = softplus(beta·x)/beta with ``register_autograd`` and a correct ``register_fake``
(``examples/custom_op_softplus.py`` plus a fake).  Two runs, each with and without opcheck
(``opcheck=True`` against ``opcheck=False``), alternating: the quick profile's 20 cases at the
record's drawn dims (1..16), and 20 cases at its benchmark size (256x256).  The quick profile
keeps opcheck opt-in because of this figure; the nightly profile runs it on every case.
Prints the medians, the ratio, the torch threads (1) and the load before and after.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_costs import interleaved, show  # noqa: E402


def _models():
    import torch

    from gradcheck_suite import Dim, op_model

    @torch.library.custom_op("gradcheck_cost::softplus", mutates_args=())
    def softplus(x: torch.Tensor, beta: float) -> torch.Tensor:
        return torch.nn.functional.softplus(beta * x) / beta

    softplus.register_fake(lambda x, beta: torch.empty_like(x))

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.beta = inputs[1]

    softplus.register_autograd(lambda ctx, g: (g * torch.sigmoid(ctx.beta * ctx.saved_tensors[0]), None),
                               setup_context=setup)
    return [op_model(softplus, name=f"softplus_opcheck_{str(on).lower()}", opcheck=on,
                     dims={"N": Dim(1, 16, 256), "F": Dim(1, 16, 256)}, inputs={"x": ("N", "F")},
                     hyper={"beta": (1.0, 0.5, 4.0)},
                     reference=lambda x, beta: torch.nn.functional.softplus(beta * x) / beta)
            for on in (True, False)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from gradcheck_suite import run_model
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)
    on, off = _models()
    for m in (on, off):                     # warm-up: imports and the first compilation
        assert run_model(m, examples=1).verdict == "pass"
    for what, dims in (("quick, 20 cases at drawn dims", None), ("20 cases at 256x256", {"N": 256, "F": 256})):
        runs = {}

        def check(m):
            runs[m.name] = run_model(m, examples=20, dims=dims)
        w, wo = interleaved(args.rounds, lambda: check(on), lambda: check(off))
        assert all(r.verdict == "pass" for r in runs.values()), {n: r.verdict for n, r in runs.items()}
        show(f"opcheck, {what}", w, wo)
    print(f"load after {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
