"""The console in a real headless Chromium, over the demo's data: log in, look, act, and be refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.console_fixtures import ADMIN_PASSWORD, READONLY_PASSWORD, Demo

WAIT_S = 30
DESKTOP = (1366, 900)


def shoot(driver: Any, folder: Path, name: str, *, width: int = DESKTOP[0]) -> None:
    """A screenshot of the whole page (the window grows to the page's height, within reason)."""
    driver.set_window_size(width, DESKTOP[1])
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max(int(height) + 140, 600), 2400))
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(*DESKTOP)


def wait(driver: Any) -> WebDriverWait[Any]:
    return WebDriverWait(driver, WAIT_S)


def log_in(driver: Any, demo: Demo, username: str, password: str) -> None:
    driver.get(demo.base_url + "/ops")
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "cohorts")))


def click(driver: Any, locator: tuple[str, str]) -> None:
    """Click what the locator finds; the refreshing pages (htmx) may swap it between finding and clicking."""

    def clicked(d: Any) -> bool:
        try:
            d.find_element(*locator).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    wait(driver).until(clicked)


def click_and_confirm(driver: Any, locator: tuple[str, str]) -> None:
    click(driver, locator)
    wait(driver).until(ec.alert_is_present()).accept()


def test_an_operator_logs_in_reads_the_demo_run_and_acts(
    browser: Any, demo: Demo, pg: psycopg.Connection[Any], screenshots: Path
) -> None:
    driver = browser
    driver.get(demo.base_url + "/ops")
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/ops/login" in driver.current_url  # no credentials: the login form, nothing else
    shoot(driver, screenshots, "login")

    log_in(driver, demo, "김운영", ADMIN_PASSWORD)
    for text in ("303", f"#{demo.changed_run_id}", "성공"):  # the page refreshes itself: read through waits
        wait(driver).until(ec.text_to_be_present_in_element((By.ID, "cohorts"), text))
    wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".banner"), "미해결 high 알림"))
    shoot(driver, screenshots, "overview")
    shoot(driver, screenshots, "overview-phone", width=390)

    click(driver, (By.CSS_SELECTOR, f"#cohorts a[href='/ops/runs/{demo.changed_run_id}']"))
    wait(driver).until(ec.url_contains(f"/ops/runs/{demo.changed_run_id}"))
    assert "수강 상태 변경" in driver.page_source
    drawn = "return Chart.getChart('chart-records') ? Chart.getChart('chart-records').data.labels.length : 0"
    assert wait(driver).until(lambda d: d.execute_script(drawn)) == 3  # the cohort's three runs, drawn
    shoot(driver, screenshots, "run")

    driver.get(f"{demo.base_url}/ops/runs/{demo.failed_run_id}")
    assert "HTTP_5XX" in driver.find_element(By.CSS_SELECTOR, ".errorbox").text
    shoot(driver, screenshots, "run-failed")

    driver.get(demo.base_url + "/ops/learners?category_id=303&user_id=" + demo.changed_user_id)
    assert "수강취소" in driver.find_element(By.ID, "learner").text
    timeline = driver.find_element(By.ID, "timeline").text
    assert "신규(NEW)" in timeline and "변경(CHANGED)" in timeline and "수강취소(CANCELLED)" in timeline
    shoot(driver, screenshots, "learners")

    driver.get(demo.base_url + "/ops/cohorts/303")
    drawn = (
        "return Chart.getChart('chart-cohort-counts') ? Chart.getChart('chart-cohort-counts').data.labels.length : 0"
    )
    assert wait(driver).until(lambda d: d.execute_script(drawn)) == 30  # the last 30 KST days, drawn
    shoot(driver, screenshots, "cohort")

    dead_letter = pg.execute("select id from alert where alert_type = 'DEAD_LETTER'").fetchone()
    assert dead_letter is not None
    driver.get(demo.base_url + "/ops/alerts")
    shoot(driver, screenshots, "alerts")
    driver.find_element(By.CSS_SELECTOR, f"#alerts a[href='/ops/alerts/{dead_letter['id']}']").click()
    click_and_confirm(driver, (By.ID, "resolve"))
    wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "해결 처리했습니다"))
    shoot(driver, screenshots, "alert")
    resolved = pg.execute("select resolved, resolved_by from alert where id = %s", (dead_letter["id"],)).fetchone()
    assert resolved == {"resolved": True, "resolved_by": "console:김운영"}

    dead = pg.execute("select max(id) as id from sheet_outbox where status = 'DEAD'").fetchone()
    assert dead is not None and dead["id"] is not None
    driver.get(demo.base_url + "/ops/queues")
    click(driver, (By.ID, f"requeue-sheet-{dead['id']}"))
    wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "다시 대기열에"))
    shoot(driver, screenshots, "queues")
    requeued = pg.execute("select status, attempts from sheet_outbox where id = %s", (dead["id"],)).fetchone()
    assert requeued == {"status": "PENDING", "attempts": 0}

    driver.get(demo.base_url + "/ops")
    click_and_confirm(driver, (By.CSS_SELECTOR, "form[action='/ops/cohorts/303/run'] button"))
    wait(driver).until(ec.url_contains("/ops/runs?category_id=303"))
    newest = (By.CSS_SELECTOR, f"#runs a[href='/ops/runs/{demo.changed_run_id + 1}']")
    wait(driver).until(ec.presence_of_element_located(newest))  # the list refreshes itself (htmx)
    row = (By.XPATH, f"//table[@id='runs']//a[@href='/ops/runs/{demo.changed_run_id + 1}']/ancestor::tr")
    wait(driver).until(ec.text_to_be_present_in_element(row, "성공"))
    shoot(driver, screenshots, "runs")
    latest = pg.execute(
        "select l.trigger_type, l.status, q.requested_by from run_log l join sync_request q on q.id = l.request_id"
        " order by l.id desc limit 1"
    ).fetchone()
    assert latest == {"trigger_type": "MANUAL", "status": "SUCCESS", "requested_by": "console:김운영"}

    driver.get(demo.base_url + "/ops/audit")
    audit = driver.find_element(By.TAG_NAME, "table").text
    assert "resolve_alert" in audit and "requeue_dead" in audit and "run_now" in audit
    shoot(driver, screenshots, "audit")
    schedule = pg.execute(
        "insert into sync_schedule (category_id, cron_expr) values (303, '0 9 * * 1-5') returning id"
    ).fetchone()
    assert schedule is not None
    driver.get(demo.base_url + "/ops/schedules")
    click(driver, (By.ID, f"pause-{schedule['id']}"))
    wait(driver).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "일시 중지했습니다"))
    assert pg.execute("select enabled from sync_schedule where id = %s", (schedule["id"],)).fetchone() == {
        "enabled": False
    }
    shoot(driver, screenshots, "schedules")


def test_the_read_only_login_is_refused_an_action_and_a_browser_without_credentials_sees_only_the_login(
    browser: Any, demo: Demo, pg: psycopg.Connection[Any], screenshots: Path
) -> None:
    driver = browser
    log_in(driver, demo, "관찰자", READONLY_PASSWORD)
    assert "읽기 전용" in driver.find_element(By.CSS_SELECTOR, ".who").text
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/run']")  # no action buttons

    alert = pg.execute("select id from alert where alert_type = 'CHANGED'").fetchone()
    assert alert is not None
    driver.get(f"{demo.base_url}/ops/alerts/{alert['id']}")
    assert not driver.find_elements(By.ID, "resolve")
    # The form a read-only login is not shown, posted anyway with the session's own CSRF token.
    driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const t = document.querySelector('input[name=csrf_token]').cloneNode(); f.appendChild(t);"
        "document.body.appendChild(f); f.submit();",
        f"/ops/alerts/{alert['id']}/resolve",
    )
    wait(driver).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "거부됨"))
    assert "읽기 전용" in driver.page_source
    shoot(driver, screenshots, "refused-read-only")
    assert pg.execute("select resolved from alert where id = %s", (alert["id"],)).fetchone() == {"resolved": False}
    entry = pg.execute("select actor, outcome from ops_audit where action = 'resolve_alert'").fetchone()
    assert entry == {"actor": "관찰자", "outcome": "DENIED"}

    driver.delete_all_cookies()
    driver.get(f"{demo.base_url}/ops/runs/{demo.changed_run_id}")
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/ops/login" in driver.current_url and "수강 상태 변경" not in driver.page_source
