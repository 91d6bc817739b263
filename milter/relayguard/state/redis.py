"""The Redis backend: runtime state shared by several relay nodes.

Atomicity: a rate-limit update is one Lua script (Redis runs a script to completion before any other
command), the same sliding-window arithmetic as window.py; the kill switch and suppression list are
single commands on hashes (HSET/HSETNX/HDEL are atomic), and a suppression's two writes go in one
MULTI. Scripts are sent by SHA and re-sent after a Redis restart emptied the script cache.

A failed command is retried once at once (a pooled connection may have died with a restarted
server); then it raises StateUnavailable. The socket timeouts come from state.timeout_ms, so a
hung server costs at most that per command. Nodes pass their own clock to `consume`: keep them in
NTP sync (a skew of s seconds shifts every window by s).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from relayguard.parsing.rfc5322 import ascii_lower
from relayguard.state import (
    ApiToken,
    Disabled,
    IdempotencyRecord,
    StateUnavailable,
    StoredBaseline,
    Suppression,
    Usage,
)
from relayguard.state.window import BUCKETS, evaluate

# KEYS: one hash per counter (field = bucket number, value = amount).
# ARGV: amount, now, buckets, then limit and window for each key.
# Returns used, limit, retry_after in milliseconds for each key; records only if all fit.
CONSUME = """
local amount = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
local over = false
local currents = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i])
  local width = window / n
  local current = math.floor(now / width)
  local oldest = current - n
  currents[i] = {current, math.ceil((window + width) * 1000)}
  local fields = redis.call('HGETALL', key)
  local live = {}
  local used = amount
  for j = 1, #fields, 2 do
    local bucket = tonumber(fields[j])
    local value = tonumber(fields[j + 1])
    if bucket < oldest then
      redis.call('HDEL', key, fields[j])
    else
      used = used + value
      table.insert(live, {bucket, value})
    end
  end
  local retry = 0
  if used > limit then
    over = true
    retry = window
    if amount <= limit then
      table.sort(live, function(a, b) return a[1] < b[1] end)
      local excess = used - limit
      local freed = 0
      for _, item in ipairs(live) do
        freed = freed + item[2]
        if freed >= excess then
          retry = math.max(0, (item[1] + n + 1) * width - now)
          break
        end
      end
    end
  end
  table.insert(out, used)
  table.insert(out, limit)
  table.insert(out, math.ceil(retry * 1000))
end
if not over then
  for i, key in ipairs(KEYS) do
    redis.call('HINCRBY', key, tostring(currents[i][1]), amount)
    redis.call('PEXPIRE', key, currents[i][2])
  end
end
return out
"""

# KEYS: the idempotency key. ARGV: the pending record, its time to live in milliseconds.
# Returns the record already there, or false after storing ARGV[1] (SET NX with a read, atomic).
CLAIM = """
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS: the token hash, the revocation hash. ARGV: token id, revocation time.
# 1 when this call revoked it; 0 for an unknown or already revoked token.
REVOKE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: the disabled hash. ARGV: source, the entry (JSON), now.
# Writes the entry unless one in force is there (no expiry, or one still ahead); 1 when written.
AUTO_DISABLE = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found then
  local expires = cjson.decode(found)['expires']
  if expires == nil or expires == cjson.null or tonumber(expires) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the baseline hash (fields version, data). ARGV: the expected version, the new data.
# Compare-and-set: 1 when the version matched (and is now one higher), 0 otherwise.
REPLACE_BASELINE = """
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', version + 1, 'data', ARGV[2])
return 1
"""


class RedisStore:
    backend = "redis"

    def __init__(
        self, url: str, prefix: str = "relayguard:", timeout_ms: int = 1000, password: str = ""
    ) -> None:
        """PASSWORD: from [state] redis_password_file (a password in URL wins; config forbids
        both)."""
        self.url = url
        self.prefix = prefix
        timeout = timeout_ms / 1000
        self._client = redis.Redis.from_url(
            url,
            password=password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        self._consume = self._client.register_script(CONSUME)
        self._auto_disable = self._client.register_script(AUTO_DISABLE)
        self._replace_baseline = self._client.register_script(REPLACE_BASELINE)
        self._claim = self._client.register_script(CLAIM)
        self._revoke = self._client.register_script(REVOKE)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise StateUnavailable(f"Redis state {self._safe_url()}: {exc}") from exc

    def _safe_url(self) -> str:
        """The URL without a password, for logs and audit lines."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}"

    def _call(self, produce: Callable[[], Any]) -> Any:
        with self._errors():
            return produce()

    # --- rate limits -------------------------------------------------------------------------
    def consume(self, key: str, amount: int, limit: int, window: float, now: float) -> Usage:
        return self.consume_many([(key, limit, window)], amount, now)[0]

    def consume_many(
        self, counters: Sequence[tuple[str, int, float]], amount: int, now: float
    ) -> list[Usage]:
        keys = [f"{self.prefix}rate:{key}" for key, _, _ in counters]
        args: list[str | int | float] = [amount, repr(now), BUCKETS]
        for _, limit, window in counters:
            args += [limit, window]
        raw = self._call(lambda: self._consume(keys=keys, args=args))
        return [
            Usage(int(raw[i]), int(raw[i + 1]), int(raw[i + 2]) / 1000)
            for i in range(0, len(raw), 3)
        ]

    def peek_usage(self, counters: Sequence[tuple[str, int, float]], now: float) -> list[Usage]:
        """HGETALL only (the Lua script above deletes expired buckets: a look must not write);
        the buckets are weighed by window.py, which that script mirrors."""
        keys = [f"{self.prefix}rate:{key}" for key, _, _ in counters]

        def read() -> list[dict[bytes | str, bytes | str]]:
            pipeline = self._client.pipeline(transaction=False)
            for key in keys:
                pipeline.hgetall(key)
            return list(pipeline.execute())

        found = self._call(read)
        return [
            evaluate({int(b): int(v) for b, v in buckets.items()}, 0, limit, window, now)
            for buckets, (_, limit, window) in zip(found, counters, strict=True)
        ]

    # --- kill switch -------------------------------------------------------------------------
    @property
    def _disabled_key(self) -> str:
        return f"{self.prefix}disabled"

    def disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> None:
        value = _disabled_json(reason, actor, now, expires)
        self._call(lambda: self._client.hset(self._disabled_key, source, value))

    def auto_disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> bool:
        args = [source, _disabled_json(reason, actor, now, expires), repr(now)]
        keys = [self._disabled_key]
        return bool(self._call(lambda: self._auto_disable(keys=keys, args=args)))

    def enable(self, source: str, actor: str) -> bool:
        return bool(self._call(lambda: self._client.hdel(self._disabled_key, source)))

    def disabled(self, source: str) -> Disabled | None:
        value = self._call(lambda: self._client.hget(self._disabled_key, source))
        return _disabled(source, value) if value else None

    def all_disabled(self) -> list[Disabled]:
        values = self._call(lambda: self._client.hgetall(self._disabled_key))
        return [_disabled(source, values[source]) for source in sorted(values)]

    # --- suppression list --------------------------------------------------------------------
    def _scope_key(self, scope: str) -> str:
        return f"{self.prefix}suppress:{scope}"

    def suppress(self, scope: str, recipient: str, reason: str, now: float) -> bool:
        value = json.dumps({"reason": reason, "since": now})

        def run() -> Any:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self._scope_key(scope), ascii_lower(recipient), value)
                pipe.sadd(f"{self.prefix}suppress-scopes", scope)
                return pipe.execute()[0]

        return bool(self._call(run))

    def unsuppress(self, scope: str, recipient: str) -> bool:
        key = self._scope_key(scope)
        return bool(self._call(lambda: self._client.hdel(key, ascii_lower(recipient))))

    def is_suppressed(self, scope: str, recipient: str) -> bool:
        key = self._scope_key(scope)
        return bool(self._call(lambda: self._client.hexists(key, ascii_lower(recipient))))

    def suppressions(self, scope: str | None = None) -> list[Suppression]:
        if scope is None:
            scopes = sorted(
                self._call(lambda: self._client.smembers(f"{self.prefix}suppress-scopes"))
            )
        else:
            scopes = [scope]
        found = []
        for name in scopes:
            entries = self._hgetall(self._scope_key(name))
            for recipient in sorted(entries):
                data = json.loads(entries[recipient])
                found.append(Suppression(name, recipient, data["reason"], float(data["since"])))
        return found

    def _hgetall(self, key: str) -> dict[str, str]:
        with self._errors():
            return dict(self._client.hgetall(key))  # type: ignore[arg-type]

    # --- send-API tokens ----------------------------------------------------------------------
    @property
    def _tokens_key(self) -> str:
        return f"{self.prefix}api-tokens"

    @property
    def _revoked_key(self) -> str:
        return f"{self.prefix}api-tokens-revoked"

    def add_api_token(self, token: ApiToken) -> None:
        value = json.dumps(
            {"source": token.source, "digest": token.digest, "actor": token.actor}
            | {"created": token.created, "expires": token.expires}
        )
        self._call(lambda: self._client.hsetnx(self._tokens_key, token.token_id, value))
        if token.revoked is not None:
            self.revoke_api_token(token.token_id, token.revoked)

    def api_token(self, token_id: str) -> ApiToken | None:
        def run() -> Any:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.hget(self._tokens_key, token_id)
                pipe.hget(self._revoked_key, token_id)
                return pipe.execute()

        value, revoked = self._call(run)
        return _api_token(token_id, value, revoked) if value else None

    def api_tokens(self, source: str | None = None) -> list[ApiToken]:
        revoked = self._hgetall(self._revoked_key)
        tokens = [
            _api_token(i, v, revoked.get(i)) for i, v in self._hgetall(self._tokens_key).items()
        ]
        return sorted(
            (t for t in tokens if source is None or t.source == source),
            key=lambda t: (t.source, t.created),
        )

    def revoke_api_token(self, token_id: str, now: float) -> bool:
        keys = [self._tokens_key, self._revoked_key]
        return bool(self._call(lambda: self._revoke(keys=keys, args=[token_id, repr(now)])))

    # --- idempotency keys --------------------------------------------------------------------
    def _idempotency_key(self, key: str) -> str:
        return f"{self.prefix}idempotency:{key}"

    def claim_idempotency(
        self, key: str, fingerprint: str, now: float, ttl: float
    ) -> IdempotencyRecord | None:
        pending = json.dumps({"fingerprint": fingerprint, "result": ""})
        args: list[str | int] = [pending, max(1, round(ttl * 1000))]
        found = self._call(lambda: self._claim(keys=[self._idempotency_key(key)], args=args))
        if not found:
            return None
        data = json.loads(found)
        return IdempotencyRecord(data["fingerprint"], data["result"])

    def finish_idempotency(self, key: str, result: str, now: float, ttl: float) -> None:
        name = self._idempotency_key(key)

        def run() -> Any:
            found = self._client.get(name)
            if found is None:
                return None
            fingerprint = json.loads(str(found))["fingerprint"]
            value = json.dumps({"fingerprint": fingerprint, "result": result})
            return self._client.set(name, value, px=max(1, round(ttl * 1000)), xx=True)

        self._call(run)

    def release_idempotency(self, key: str) -> None:
        self._call(lambda: self._client.delete(self._idempotency_key(key)))

    # --- anomaly baselines --------------------------------------------------------------------
    def baseline(self, source: str) -> StoredBaseline | None:
        found = self._hgetall(f"{self.prefix}baseline:{source}")
        return StoredBaseline(int(found["version"]), found["data"]) if found else None

    def replace_baseline(self, source: str, data: str, version: int) -> bool:
        keys = [f"{self.prefix}baseline:{source}"]
        return bool(self._call(lambda: self._replace_baseline(keys=keys, args=[version, data])))

    def learn_domains(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> set[str]:
        return self._learn(source, domains, now, forget_before, read_baseline=False)[0]

    def learn_domains_and_baseline(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> tuple[set[str], StoredBaseline | None]:
        new, found = self._learn(source, domains, now, forget_before, read_baseline=True)
        return new, StoredBaseline(int(found["version"]), found["data"]) if found else None

    def _learn(
        self,
        source: str,
        domains: Collection[str],
        now: float,
        forget_before: float,
        *,
        read_baseline: bool,
    ) -> tuple[set[str], dict[str, str]]:
        """One MULTI, one round trip: forget old domains, add each new one (ZADD NX answers 1
        for it), move every domain's last-seen time to now, and read the baseline if asked."""
        key = f"{self.prefix}domains:{source}"
        unique = sorted(set(domains))

        def run() -> Any:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", f"({forget_before!r}")
                for domain in unique:
                    pipe.zadd(key, {domain: now}, nx=True)
                if unique:
                    pipe.zadd(key, dict.fromkeys(unique, now), xx=True)
                if read_baseline:
                    pipe.hgetall(f"{self.prefix}baseline:{source}")
                return pipe.execute()

        replies = self._call(run)
        added = replies[1 : 1 + len(unique)]
        new = {domain for domain, fresh in zip(unique, added, strict=True) if fresh}
        return new, dict(replies[-1]) if read_baseline else {}

    def close(self) -> None:
        self._client.close()


def _api_token(token_id: str, value: str, revoked: str | None) -> ApiToken:
    data = json.loads(value)
    return ApiToken(
        token_id,
        data["source"],
        data["digest"],
        data["actor"],
        float(data["created"]),
        _optional_time(data.get("expires")),
        _optional_time(revoked),
    )


def _optional_time(value: object) -> float | None:
    return None if value is None else float(str(value))


def _disabled_json(reason: str, actor: str, now: float, expires: float | None) -> str:
    return json.dumps({"reason": reason, "actor": actor, "since": now, "expires": expires})


def _disabled(source: str, value: str) -> Disabled:
    data = json.loads(value)
    expires = data.get("expires")
    return Disabled(
        source,
        data["reason"],
        data["actor"],
        float(data["since"]),
        None if expires is None else float(expires),
    )
