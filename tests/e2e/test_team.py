"""Team mode through two real mitmdump proxies sharing one real redis-server,
the simulator as their upstream: one cache, one budget, one set of rate
limits; Redis stopped and started in the middle of traffic."""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import anthropic
import httpx
import openai
import pytest

from tokenaddons.engines import tokens
from tokenaddons.providers import BY_NAME

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5  # redis_timeout_s of the proxies here


@pytest.fixture
def team(make_proxy, sim, redis_server):
    """make(sets) -> two proxies A and B on one Redis, each with its own event store."""

    def make(sets: dict | None = None, count: int = 2):
        sets = {"redis_url": redis_server.url, "redis_timeout_s": str(TIMEOUT_S), **(sets or {})}
        return [make_proxy(sim.url, sets) for _ in range(count)]

    return make


def ask(proxy, text: str, key: str = "k1", stream: bool = False, headers: dict | None = None, timeout: float = 30):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 60, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return httpx.post(proxy.url + "/v1/messages", json=body, timeout=timeout,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01", **(headers or {})})


def attempt(fn, *args, **kwargs):
    """The answer, or the error a client saw."""
    try:
        return fn(*args, **kwargs)
    except httpx.HTTPError as e:
        return e


def wait_until(check, timeout: float = 10.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    return check()


# ------------------------------------------------------------------ one cache

@pytest.mark.parametrize("stream", [False, True])
def test_e2e_an_answer_from_a_is_a_hit_on_b_and_another_key_misses_on_both(team, sim, stream):
    a, b = team()
    first = ask(a, "shared prompt", stream=stream)
    assert first.status_code == 200 and first.headers["x-tokenaddons-cache"] == "MISS"
    again = wait_until(lambda: (r := ask(b, "shared prompt", stream=stream)).headers["x-tokenaddons-cache"] == "HIT"
                       and r, timeout=5)
    assert again, "the answer A stored never reached B"
    assert again.content == first.content  # byte for byte, a stream replayed as the same events
    assert sim.upstream_calls == 1
    # the same prompt with another API key is that caller's own, on either proxy
    assert ask(b, "shared prompt", key="k2", stream=stream).headers["x-tokenaddons-cache"] == "MISS"
    assert ask(a, "shared prompt", key="k3", stream=stream).headers["x-tokenaddons-cache"] == "MISS"
    assert sim.upstream_calls == 3
    hit = b.rows(1, table="decisions", where="addon = 'cache' AND action = 'hit'")[0]
    assert json.loads(hit["detail"])["team"] is True and hit["usd_saved"] > 0
    assert [r["cache_status"] for r in b.rows(2)] == ["HIT", "MISS"]


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_twins_on_two_proxies_reach_upstream_once(team, sim, stream):
    a, b = team()
    slow = {"x-sim-fault": "slow:1.5"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        leader = pool.submit(ask, a, "single flight", stream=stream, headers=slow)
        time.sleep(0.4)  # A is fetching: B's twins wait for its answer instead of paying again
        twins = [pool.submit(ask, proxy, "single flight", stream=stream, headers=slow) for proxy in (b, b, a, b)]
        answers = [leader.result()] + [t.result() for t in twins]
    assert sim.upstream_calls == 1
    assert [r.status_code for r in answers] == [200] * 5
    assert len({r.content for r in answers}) == 1
    assert answers[0].headers["x-tokenaddons-cache"] == "MISS"
    assert all(r.headers["x-tokenaddons-cache"] == "HIT" for r in answers[1:])


def test_e2e_a_fetch_that_fails_lets_the_waiting_proxy_go_upstream_itself(team, sim):
    a, b = team()

    def leader():
        found = attempt(ask, a, "cut short", stream=True, headers={"x-sim-fault": "cut:5", "x-sim-delay-ms": "200"})
        return found, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # A's stream is cut after its fifth event, about a second in: nothing is stored
        cut = pool.submit(leader)
        time.sleep(0.4)
        started = time.monotonic()
        twin = ask(b, "cut short", stream=True)  # waits on A's fetch, then asks upstream itself
        done = time.monotonic()
        error, failed = cut.result()
        assert isinstance(error, httpx.RemoteProtocolError)
    assert twin.status_code == 200 and twin.headers["x-tokenaddons-cache"] == "MISS"
    assert b"message_stop" in twin.content
    # it waited for A's fetch to fail (its answer came after A's client saw the cut; a loaded
    # machine can stretch the sleep above, so no fixed lower bound) and not for cache_wait_s
    assert failed - 0.05 < done and done - started < 5
    assert sim.upstream_calls == 2


# ------------------------------------------------------------------ one budget

BUDGET_BODY = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "spend"}])


def worst_case() -> float:
    return tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BUDGET_BODY) * 3e-6 + 60 * 15e-6


def spend(proxy, i: int, headers: dict | None = None) -> str:
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=30)
    try:
        c.messages.create(**{**BUDGET_BODY, "messages": [{"role": "user", "content": f"spend {i:02d}"}]},
                          extra_headers=headers)
        return "ok"
    except anthropic.RateLimitError as e:
        assert "daily budget" in str(e)
        return "refused"
    except anthropic.InternalServerError as e:
        assert e.status_code == 503 and "Redis" in str(e)
        return "no redis"


def test_e2e_twenty_concurrent_requests_over_two_proxies_under_a_cap_worth_five(team, sim):
    cap = 5.5 * worst_case()
    a, b = team({"budget_daily_usd": str(cap)})
    for proxy in (a, b):  # warm: a first request loads the scrubber's engines (and costs nothing here)
        ask(proxy, "warm", headers={"x-tokenaddons-cache": "bypass", "x-sim-patch": json.dumps(
            {"usage": {"input_tokens": 0, "output_tokens": 0}})})
    sim.requests.clear()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda i: spend((a, b)[i % 2], i, {"x-sim-fault": "slow:0.5"}), range(20)))
    assert 1 <= outcomes.count("ok") <= 5
    assert outcomes.count("refused") == 20 - outcomes.count("ok")
    assert len(sim.requests) == outcomes.count("ok")
    rows = a.rows(11) + b.rows(11)  # each proxy writes its own rows
    assert sum(r["cost_usd"] or 0 for r in rows) <= cap


def test_e2e_a_restarted_proxy_and_a_restarted_redis_keep_the_teams_spend(team, sim, redis_server, make_proxy):
    cap = 3.5 * worst_case()
    a, b = team({"budget_daily_usd": str(cap)})
    passed = 0
    while passed < 20 and spend(a, passed) == "ok":  # A spends until the cap refuses it
        passed += 1
    assert passed >= 3
    assert spend(b, 100) == "refused"  # B, which spent nothing, is refused too
    redis_server.restart()  # every key gone: A reports its own spend again within a second or two
    time.sleep(2.5)
    assert spend(b, 101) == "refused"
    # A itself restarts (its store keeps its spend) while Redis is empty again
    a.stop()
    redis_server.restart()
    make_proxy(sim.url, {"redis_url": redis_server.url, "budget_daily_usd": str(cap)}, workdir=a.workdir)
    time.sleep(2.5)
    assert spend(b, 102) == "refused"
    assert len(sim.requests) == passed


# ------------------------------------------------------------------ one set of rate limits

def test_e2e_one_rate_limit_over_two_proxies(team, sim):
    a, b = team({"ratelimit_rpm": 5, "ratelimit_max_wait_s": "0"})
    outcomes = []
    for i in range(10):
        c = openai.OpenAI(base_url=(a, b)[i % 2].url + "/v1", api_key="k", max_retries=0)
        try:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"burst {i}"}])
            outcomes.append("ok")
        except openai.RateLimitError as e:
            assert "rate limit reached (rpm of provider openai)" in str(e)
            outcomes.append("429")
    assert outcomes == ["ok"] * 5 + ["429"] * 5
    assert len(sim.requests) == 5


def test_e2e_an_upstream_429_pauses_that_credential_on_every_proxy(team, redis_server, make_proxy):
    from tokenaddons.sim import Simulator

    with Simulator(retry_after=30) as sim:
        sets = {"redis_url": redis_server.url, "ratelimit_max_pause_s": "2", "ratelimit_max_wait_s": "0"}
        a, b = make_proxy(sim.url, sets), make_proxy(sim.url, sets)

        def ask_as(proxy, key, fault=None):
            c = openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)
            return c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {time.monotonic()}"}],
                extra_headers={"x-sim-fault": fault} if fault else None)

        for proxy in (a, b):  # warm: a first request loads the scrubber's engines
            ask_as(proxy, "bob")
        with pytest.raises(openai.RateLimitError):
            ask_as(a, "alice", fault="429")  # A is told no for alice
        time.sleep(0.2)
        with pytest.raises(openai.RateLimitError) as paused:
            ask_as(b, "alice")  # B holds back too, without asking upstream
        assert "slow down" in paused.value.response.headers["x-tokenaddons-ratelimit"]
        assert int(paused.value.response.headers["retry-after"]) <= 2
        assert ask_as(b, "bob").http_response.status_code == 200  # another credential is not paused
        assert len(sim.requests) == 4
        time.sleep(2.2)
        assert ask_as(b, "alice").http_response.status_code == 200  # the capped pause ended for everyone


# ------------------------------------------------------------------ Redis stopped mid-traffic

class Traffic:
    """Clients sending steadily to both proxies, each request timed: repeats of a few
    prompts (hits) and new ones (misses), until stopped."""

    def __init__(self, proxies, clients: int = 4):
        self.proxies = proxies
        self.results: list[tuple[float, float, str, object]] = []  # (start, seconds, proxy, answer or error)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, n: int) -> None:
        i = 0
        while not self.stopping.is_set():
            proxy = self.proxies[(n + i) % len(self.proxies)]
            text = f"steady {n} {i}" if i % 2 else f"repeated {n % 2}"
            start = time.monotonic()
            answer = attempt(ask, proxy, text, timeout=20)
            with self.lock:
                self.results.append((start, time.monotonic() - start, proxy.url, answer))
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def between(self, start: float, end: float) -> list:
        """Requests sent and answered within [start, end)."""
        with self.lock:
            return [r for r in self.results if start <= r[0] and r[0] + r[1] < end]


@pytest.mark.parametrize("outage, fail_open", [("stopped", False), ("frozen", True)])
def test_e2e_redis_stopped_and_started_in_the_middle_of_traffic(team, sim, redis_server, outage, fail_open):
    """Stopped: connections refused at once. Frozen (SIGSTOP): connections open and
    nothing answered, so every wait on Redis ends at its timeout."""
    a, b = team({"budget_daily_usd": "50", "budget_fail_open": str(fail_open).lower()})
    for proxy in (a, b):  # warm: a first request loads the scrubber's engines
        assert ask(proxy, "warm").status_code == 200
    with Traffic((a, b)) as traffic:
        time.sleep(1.5)
        redis_server.stop() if outage == "stopped" else redis_server.freeze()
        stopped = time.monotonic()
        time.sleep(3)
        restarting = time.monotonic()
        redis_server.start() if outage == "stopped" else redis_server.thaw()
        started = time.monotonic()
        probes = []

        def shared_again() -> bool:  # a new answer from A is a hit on B
            probes.append(ask(a, f"after {len(probes)}"))
            return ask(b, f"after {len(probes) - 1}").headers["x-tokenaddons-cache"] == "HIT"

        shared = wait_until(shared_again, timeout=10)
        back = time.monotonic() - started
        time.sleep(1)
    assert shared, "the cache was not shared again within 10 s of Redis coming back"
    assert back < 5
    sent = traffic.results
    errors = [r for r in sent if isinstance(r[3], Exception)]
    assert not errors, errors[:3]  # none lost: every request got an answer
    during = traffic.between(stopped, restarting)
    assert len(during) >= 8
    # nothing waits on a dead Redis longer than its timeout: the first calls end at it, the rest fail at once
    # (against the slowest request while Redis answered: this machine is shared and loaded)
    before = max(seconds for _, seconds, _, _ in traffic.between(0, stopped - 0.1))
    slowest = max(seconds for start, seconds, _, _ in sent if stopped <= start < restarting)
    print(f"{outage}: {len(during)} requests during the outage, the slowest {slowest:.3f} s; "
          f"before it {before:.3f} s")
    assert slowest < before + TIMEOUT_S + 0.25
    statuses = {r[3].status_code for r in during}
    if fail_open:  # checked against each proxy's own spend: everything goes through
        assert statuses == {200}
    else:  # refused, in the provider's shape, naming Redis; hits are still served from each proxy's own tiers
        assert 503 in statuses and statuses <= {200, 503}
        refusal = next(r[3] for r in during if r[3].status_code == 503)
        assert refusal.json()["type"] == "error" and "Redis" in refusal.json()["error"]["message"]
        assert refusal.headers["x-tokenaddons-budget"] == "redis unreachable"
        passed = [r for r in during if r[3].status_code == 200]
        assert all(r[3].headers["x-tokenaddons-cache"] == "HIT" for r in passed), [
            (r[0] - stopped, r[1], r[3].headers) for r in passed if r[3].headers["x-tokenaddons-cache"] != "HIT"]
    assert {r[3].status_code for r in traffic.between(started + back + 0.5, time.monotonic())} == {200}
    # each proxy metered every request it answered
    for proxy in (a, b):
        answered = 1 + len(probes) + sum(1 for r in sent if r[2] == proxy.url)
        assert len(proxy.rows(answered, timeout=20)) == answered
    for proxy in (a, b):  # the outage said once, and the recovery
        text = proxy.log.read_text()
        assert text.count("cannot be reached (") == 1 and text.count("is back;") == 1, text[-3000:]


# ------------------------------------------------------------------ TLS, a password, and nothing of it logged

def test_e2e_rediss_with_a_password_works_and_the_password_is_never_logged(make_proxy, sim, tmp_path):
    from tokenaddons.test import redis
    from tokenaddons.test.certs import self_signed

    if not redis.available():
        pytest.skip("redis-server not installed (scripts/setup.sh installs it with apt-get, as root)")
    password = "team-s3cret-PW"
    cert, key = self_signed(tmp_path, "redis")
    with redis.RedisServer(tmp_path / "redis", password=password, tls=(cert, key)) as server:
        url = f"{server.url}?ssl_ca_certs={cert}"
        a, b = (make_proxy(sim.url, {"redis_url": url, "redis_timeout_s": "1"}) for _ in range(2))
        assert ask(a, "over TLS").headers["x-tokenaddons-cache"] == "MISS"
        assert wait_until(lambda: ask(b, "over TLS").headers["x-tokenaddons-cache"] == "HIT", timeout=5)
        assert sim.upstream_calls == 1
        server.stop()  # an outage and a recovery log the URL too
        assert ask(a, "while down").status_code == 200
        server.start()
        assert wait_until(lambda: "is back;" in a.log.read_text(), timeout=10)
        statuses = [p.read_text() for proxy in (a, b) for p in proxy.store.parent.glob("*.team-*.json")]
        assert len(statuses) == 2 and all("rediss://:***@" in s and password not in s for s in statuses)
    for proxy in (a, b):
        proxy.stop()
        text = proxy.log.read_text()
        assert "rediss://:***@127.0.0.1" in text and password not in text
        assert password.encode() not in proxy.store.read_bytes()
