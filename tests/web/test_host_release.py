"""The host page of a host whose lock a stopped run kept (fleet.remote_stop): why, and an operator's release."""

from __future__ import annotations

from fleet.store import records
from fleet.store.db import db
from fleet.store.models import HostLock
from tests.web.test_ui import app, audit_actions, check_run_id, operator, post, text, viewer  # noqa: F401

REASON = "remote work may still run: the SSH connection of the run to it is gone"


def keep_lock(app, host: str = "web1") -> int:
    run_id = check_run_id(app)
    with app.app_context():
        db.session.add(HostLock(host=host, run_id=run_id, kept_reason=REASON))
        db.session.commit()
    return run_id


def test_a_kept_lock_is_shown_with_its_reason_and_only_an_operator_may_release_it(app, viewer, operator):
    run_id = keep_lock(app)
    seen = text(viewer.get("/hosts/web1"))
    assert 'id="kept-lock"' in seen and REASON in seen and f"#{run_id}" in seen
    assert "/hosts/web1/release" not in seen and "fleet hosts release web1" in seen
    assert post(viewer, "/hosts/web1/release").status_code == 403

    assert "/hosts/web1/release" in text(operator.get("/hosts/web1"))
    answer = post(operator, "/hosts/web1/release")
    assert answer.status_code == 303
    assert ("otto", "host.release", "web1") in audit_actions(app)
    page = text(operator.get(answer.headers["Location"]))
    assert f"released the lock run {run_id} kept on web1" in page and 'id="kept-lock"' not in page
    with app.app_context():
        assert records.kept_locks() == []
    assert "has no kept lock" in text(operator.get(post(operator, "/hosts/web1/release").headers["Location"]))
