"""The load shape: the [load] plan (concurrency sweep, or open-loop rate sweep), stage by stage."""

from locust import LoadTestShape

from locustfiles import runtime


class LoadPlanShape(LoadTestShape):
    """Stages from [load] stages (closed) or rates (open), each with ramp, warmup, steady, drain."""

    def tick(self):
        return runtime.context().shape_tick(self.runner, self.get_run_time())
