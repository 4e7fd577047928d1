"""The admin's reset and dispose reach every process of the fleet.

The process that serves the POST applies the action at once; another process
(here a second sampler sharing the fleet cache, as a worker would) applies it
at its next sample and says so in its snapshot, which ``dashboard/database``
lists. The request never waits for the others. Real gunicorn workers reached
this way are in tests/fleet.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from sqlalchemy import text

from mingus_sessions import get_engine, monitor, session_scope
from mingus_sessions.metrics import get_pool_metrics
from tests.surfaces.helpers import FAKE_HOST

pytestmark = pytest.mark.django_db(databases=["default", "other"])

BASE = "/admin/mingus_sessions/connectionpool/"


@pytest.fixture
def changer() -> Client:
    """A staff user with the change permission (which implies the view permission), logged in."""
    user = User.objects.create_user("changer", is_staff=True)
    for codename in ("change_connectionpool", "view_connectionpool"):
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="mingus_sessions", codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def worker() -> monitor._Monitor:
    """Another process's sampler on the same fleet cache; it samples when told."""
    found = monitor._Monitor("worker", 60)
    found.host, found.pid = FAKE_HOST, 4242
    found.tick()
    return found


def use_main(times: int = 3) -> None:
    for _ in range(times):
        with session_scope("main") as session:
            session.execute(text("SELECT 1"))


def message_of(client: Client, response: Any) -> str:
    page = client.get(response["Location"]).content.decode()
    return page.replace("&quot;", '"')


def test_reset_is_applied_here_at_once_and_by_the_others_at_their_next_sample(
    changer: Client, fleet_cache: Any
) -> None:
    """The message says how many processes still apply it; the dashboard then lists both."""
    changer.get(BASE)  # this process joins the fleet as the web process
    other = worker()
    use_main()
    response = changer.post(BASE + "pool/main/reset/")
    assert response.status_code == 302
    assert get_pool_metrics("main").checkouts == 0  # applied here, before the answer
    shown = message_of(changer, response)
    assert 'Reset the metrics of pool "main". Applied in ' in shown
    assert "1 other live process(es) apply it at their next sample (within 60 s)" in shown
    [action] = changer.get("/dashboard/database").json()["actions"]
    assert action["pending"] == [f"{FAKE_HOST}:4242"]
    use_main()
    other.tick()  # the worker's next sample: it resets its own pools (here, the same ones)
    assert get_pool_metrics("main").checkouts == 0
    [action] = changer.get("/dashboard/database").json()["actions"]
    assert action["pending"] == []
    assert f"{FAKE_HOST}:4242" in action["applied"]
    assert len(action["applied"]) == 2


def test_dispose_every_pool_reaches_the_other_processes(changer: Client, fleet_cache: Any) -> None:
    """dispose-all: applied here; the other process replaces its engines' pools when it samples."""
    changer.get(BASE)
    other = worker()
    use_main()
    response = changer.post(BASE + "dispose-all/")
    assert response.status_code == 302
    after_here = get_engine("main").pool
    use_main()  # a connection checked in again
    other.tick()
    assert get_engine("main").pool is not after_here
    assert list(other.applied)


@pytest.mark.usefixtures("unreachable_fleet")
def test_an_unreachable_fleet_cache_is_said_and_this_process_is_reset(changer: Client) -> None:
    """The cache down: the action is applied where it runs, and the message says only there."""
    use_main()
    response = changer.post(BASE + "pool/main/reset/")
    assert response.status_code == 302
    assert get_pool_metrics("main").checkouts == 0
    shown = message_of(changer, response)
    assert 'only: The FLEET cache "down" (RedisCache) cannot be reached' in shown
