"""The operators' desk in Chromium: log an incident with the keyboard alone, work it, merge a duplicate, and see the
wall follow. Screenshots go to ``test-artifacts/`` with the wall's."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from gis_ioc import auth

from .test_browser import browser, server, visit, wait_until  # noqa: F401 - the wall tests' Chromium and server

DESK_READY = "document.querySelectorAll('#desk-queue li').length > 0 && document.querySelector('#desk-live')" \
             ".textContent == 'LIVE'"
WALL_READY = "window.gisIocWall && window.gisIocWall.renderedMs && window.gisIocWall.connected"


def _status(page) -> str:  # type: ignore[no-untyped-def]
    return str(page.inner_text("#desk-detail p b"))


@pytest.fixture
def operator(demo_engine) -> str:  # type: ignore[no-untyped-def]
    return auth.create_key(demo_engine, f"desk-{uuid.uuid4().hex[:6]}", "operator")


def test_an_operator_logs_works_and_merges_incidents_from_the_keyboard(visit, server, operator):  # noqa: F811
    wall = visit("/views/wall", WALL_READY)
    before = int(wall.page.inner_text("#gis-kpi-active"))
    desk = visit("/views/desk")
    page = desk.page
    page.wait_for_selector("#desk-key", state="visible")
    page.keyboard.type(operator)
    page.keyboard.press("Enter")
    wait_until(page, DESK_READY)
    assert page.evaluate("sessionStorage.getItem('gis-ioc-desk-key')") == operator
    assert page.evaluate("localStorage.length") == 0 and "gioc_" not in page.evaluate("document.cookie")
    desk.shot("desk-queue")
    created: list[int] = []
    try:
        # a place typed without diacritics, chosen with Enter, and the incident typed field by field
        page.keyboard.press("/")
        page.keyboard.type("dak ha")
        page.wait_for_selector("#desk-results li.desk-hit", timeout=10_000)
        assert "Đắk Hà" in page.inner_text("#desk-results li.desk-hit")
        page.keyboard.press("Enter")
        page.wait_for_selector("#desk-form", state="visible")
        assert page.evaluate("document.activeElement.id") == "f-type"
        page.keyboard.type("fire")
        page.keyboard.press("Tab")
        page.keyboard.type("extreme")
        page.keyboard.press("Tab")
        page.keyboard.type("114")
        page.keyboard.press("Tab")
        page.keyboard.press("Control+Enter")  # no title: refused at the field, nothing saved
        page.wait_for_selector('#desk-form .desk-error[data-for="title"]:not(:empty)', timeout=10_000)
        assert "required" in page.inner_text('#desk-form .desk-error[data-for="title"]')
        page.keyboard.type("Cháy nhà dân gần chợ Đắk Hà")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#desk-detail:not([hidden]) h3", timeout=10_000)
        main = int(re.search(r"Logged #(\d+)", page.inner_text("#desk-message")).group(1))  # type: ignore[union-attr]
        created.append(main)
        assert f"#{main}" in page.inner_text("#desk-detail h3") and _status(page) == "new"
        wait_until(page, f"document.querySelector('#desk-queue li[data-id=\"{main}\"]') !== null")
        wait_until(wall.page, f"document.querySelector('#gis-kpi-active').textContent == '{before + 1}'")
        desk.shot("desk-new-incident")

        # a second call about the same fire: suggested as a duplicate before it is saved, then merged
        page.keyboard.press("Escape")
        page.keyboard.press("n")
        page.wait_for_selector("#desk-form", state="visible")
        page.keyboard.type("fire")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.type("Người dân báo cháy (gọi lại)")
        page.wait_for_selector(f'#desk-dupes [data-merge="{main}"]', timeout=10_000)
        desk.shot("desk-duplicate")
        page.click(f'#desk-dupes [data-merge="{main}"]')
        wait_until(page, "/merged into #/.test(document.querySelector('#desk-message').textContent)")
        report = int(re.search(r"Logged #(\d+)", page.inner_text("#desk-message")).group(1))  # type: ignore[union-attr]
        created.append(report)
        wait_until(page, "/1 reports merged/.test(document.querySelector('#desk-detail').textContent)")
        assert page.query_selector(f'#desk-queue li[data-id="{report}"]') is None  # one event in the queue
        wall.page.wait_for_timeout(1500)
        assert int(wall.page.inner_text("#gis-kpi-active")) == before + 1  # and on the wall

        # someone else changes it meanwhile: the desk says who, and shows it as it is now
        other = httpx.patch(f"{server}/collections/incidents/items/{main}", json={"properties": {"severity": "severe"}},
                            headers={"Authorization": f"Bearer {operator}"}, timeout=10)
        assert other.status_code == 200
        # the desk follows the change's event (it shows the incident again); then, as if that event had not come
        # yet, it holds the version it had shown before: its next step must be refused and explained
        wait_until(page, "/severe/.test(document.querySelector('#desk-detail p').textContent)")
        page.keyboard.press("Escape")
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.evaluate("GisIocDesk.state.etag = '\"seen-before\"'")
        page.keyboard.press("1")
        wait_until(page, "/changed meanwhile by desk-/.test(document.querySelector('#desk-message').textContent)")
        wait_until(page, "/severe/.test(document.querySelector('#desk-detail p').textContent) && "
                         "GisIocDesk.state.etag !== '\"seen-before\"'")

        # every step with one key, If-Match carried
        for expected in ("verified", "dispatched", "in_progress", "resolved", "closed"):
            page.keyboard.press("1")
            try:
                wait_until(page, f"document.querySelector('#desk-detail p b') && "
                                 f"document.querySelector('#desk-detail p b').textContent == '{expected}'")
            except AssertionError:
                raise AssertionError((expected, page.inner_text("#desk-message"), page.inner_text("#desk-detail"),
                                      page.evaluate("document.activeElement.outerHTML.slice(0, 200)"))) from None
        wait_until(page, "/status → closed/.test(document.querySelector('#desk-history').textContent)")
        steps = page.inner_text("#desk-history")
        assert "verified" in steps and "closed" in steps and "merge" in steps
        wait_until(page, f"document.querySelector('#desk-queue li[data-id=\"{main}\"]') === null")
        wait_until(wall.page, f"document.querySelector('#gis-kpi-active').textContent == '{before}'")
        desk.shot("desk-closed")
    finally:
        for incident in reversed(created):
            httpx.delete(f"{server}/collections/incidents/items/{incident}",
                         headers={"Authorization": f"Bearer {operator}"}, timeout=10)
    # the browser logs the two refusals the test asked for (the missing title, the stale If-Match); nothing else
    expected = [e for e in desk.errors if re.search(r"status of (400|412) ", e)]
    assert len(expected) == 2 and desk.errors == expected and not desk.foreign, (desk.errors, desk.foreign)


def test_the_desk_refuses_an_unknown_key(visit):  # noqa: F811
    desk = visit("/views/desk")
    desk.page.wait_for_selector("#desk-key", state="visible")
    desk.page.keyboard.type("gioc_not_a_key")
    desk.page.keyboard.press("Enter")
    desk.page.wait_for_selector("#desk-signin-error:not(:empty)")
    assert desk.page.is_hidden("#desk-main")
    assert desk.page.evaluate("sessionStorage.length") == 0
