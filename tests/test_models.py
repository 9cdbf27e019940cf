"""Every registered model's hand-written backward, on generated cases (via the plugin)."""


def test_backward(gradcheck_target):
    gradcheck_target.check()
