"""Where a run's Ansible executes.

`FLEET_EXECUTOR=local` (the default): in the process that runs the run (fleet.jobs).
`FLEET_EXECUTOR=celery`: the run's hosts are split into shards (fleet.store.shards) that
`fleet worker` processes execute, each a Celery worker consuming the broker's `fleet` queue
and writing into the same store. The controller stays the only place that decides (plan,
policy, rollout); workers only execute.

    dispatch.py   the controller's side: split, send, supervise, gather verdicts
    celery_app.py the Celery app both sides build from the settings (broker, queue, task name)
    shard.py      the worker's side of one shard: export the exact sha, validate, run, record
    worker.py     `fleet worker`: the Celery worker, its heartbeat, version refusal
"""
