"""The compact ledger layout: what a pending callback costs Redis, and the Lua that hides it.

A pending callback is the callback of the busiest key space, so it pays for no key of its
own: its record is one field of its shard's record hash (``keys.records``), packed in a
binary form (ids as 16 bytes, times as 6), and the number's window is one field of the
shard's window hash (``keys.windows``) listing the number's callbacks and their times. The
worker's walk of the shard (``keys.pending_all``) keeps ids as 17 bytes, and an agent's
pending count is one counter of the shard's owner hash (``keys.owner_counts``), moved by
the same step that moves the record. None of these has a TTL: each packed record and
window field carries its own expiry, and the sweep duty (``SWEEP``) deletes what has
passed it, a bounded slice of each shard per round.

The scripts still speak of a record key (``keys.record``) and a number's pending set
(``keys.pending``): ``LAYER`` is a Lua prelude whose ``R_*`` and ``Z_*`` functions do on
the packed fields what HGET, HSET, ZADD, ZRANGEBYSCORE and the rest did on those keys, so
each step reads as it did and stays one atomic script. The keys of the layout before this
one (a hash per record, a sorted set per number, text ids in the walk, a sorted set per
owner) are still read, and each is rewritten in the packed form by the first step that
changes it: an upgrade needs no migration run, and nothing it held is lost.

The packed record is a list of fields, each a one-byte code and its value in the field's
kind (``_KINDS``); a value that does not fit its kind (an id that is not a lower-case UUID,
a negative number) is kept as it was, with its length, under the code plus 64, and a field
the table does not know is kept with its name: every value reads back exactly as written.
"""

from __future__ import annotations

from typing import Final

#: The record fields in code order (code = position + 1) and their kinds: ``i`` a whole
#: number below 2**48 (6 bytes), ``u`` a lower-case UUID (16), ``h`` even-length lower-case
#: hex (a length byte and the bytes), ``d`` a comma-separated list of number digests (a
#: count and 17 bytes each), ``m`` a callback state (1), ``r`` kept as written.
_KINDS: Final = (
    # The expiry first, at a fixed place: the sweep reads it without decoding the rest.
    ("xp", "i"), ("s", "i"), ("a", "u"), ("q", "u"), ("st", "m"), ("x", "u"), ("t", "h"),
    ("c", "i"), ("k", "u"), ("e", "r"), ("r", "u"), ("rf", "u"), ("ns", "d"), ("v", "i"),
    ("ep", "i"), ("cx", "r"), ("dx", "r"), ("rx", "i"), ("n", "d"), ("id", "r"), ("rt", "r"))

_STATES: Final = ("CREATING", "QUEUED", "PENDING", "CANCELLED", "COMPLETED", "DISCONNECTED",
                  "REASSIGNED", "DEAD_LETTER")

_HEX = "[0-9a-f]"
# Written out here, not built by the script: the prelude runs on every call.
_TABLE: Final = (
    "local _F = {" + ", ".join(f"'{name}'" for name, _ in _KINDS) + "}\n"
    "local _KIND = {" + ", ".join(f"{name} = '{kind}'" for name, kind in _KINDS) + "}\n"
    "local _CODE = {" + ", ".join(f"{name} = {i}" for i, (name, _) in enumerate(_KINDS, 1))
    + "}\n"
    "local _STATES = {" + ", ".join(f"'{s}'" for s in _STATES) + "}\n"
    "local _SCODE = {" + ", ".join(f"{s} = {i}" for i, s in enumerate(_STATES, 1)) + "}\n"
    f"local _UUID = '^{_HEX * 8}%-{_HEX * 4}%-{_HEX * 4}%-{_HEX * 4}%-{_HEX * 12}$'\n"
    f"local _DIGEST = '^{_HEX * 33}$'\n")

#: The prelude every script that touches a record, a number's window or the walk starts
#: with (``with_layer``). Its names all start with ``R_``, ``Z_``, ``W_`` or ``_``.
LAYER: Final = "-- packed ledger layer\n" + _TABLE + r"""
local _sb, _sc, _ss, _sf = string.byte, string.char, string.sub, string.format
local _LIVE = {CREATING = true, QUEUED = true, PENDING = true}
local _now
local function _now_ms()
  if not _now then
    local t = redis.call('TIME')
    _now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return _now
end
local _tn = tonumber
local _fl = math.floor
-- Eight hex digits at a time: every call counts, the prelude runs in each step.
local function _h2b(h)
  local o, n, len = {}, 0, #h
  for i = 1, len, 8 do
    local c = _ss(h, i, i + 7)
    local v = _tn(c, 16)
    if #c == 8 then
      o[n + 1] = _sc(_fl(v / 16777216), _fl(v / 65536) % 256, _fl(v / 256) % 256, v % 256)
    else
      local k = {}
      for j = #c / 2, 1, -1 do k[j] = v % 256; v = _fl(v / 256) end
      o[n + 1] = _sc(unpack(k))
    end
    n = n + 1
  end
  return table.concat(o)
end
local _HEXF = {}
local function _b2h(b)
  local l = #b
  if l == 0 then return '' end
  local f = _HEXF[l]
  if not f then f = string.rep('%02x', l); _HEXF[l] = f end
  return _sf(f, _sb(b, 1, -1))
end
local function _i6(n)
  local hi, lo = _fl(n / 16777216), n % 16777216
  return _sc(_fl(hi / 65536) % 256, _fl(hi / 256) % 256, hi % 256, _fl(lo / 65536),
    _fl(lo / 256) % 256, lo % 256)
end
local function _u6(s, p)
  local n = 0
  for i = p, p + 5 do n = n * 256 + _sb(s, i) end
  return n
end
local function _len2(n) return _sc(math.floor(n / 256), n % 256) end
local function _uuid_b(v) return _h2b((string.gsub(v, '-', ''))) end
local function _uuid_t(b)
  local h = _b2h(b)
  return _ss(h, 1, 8) .. '-' .. _ss(h, 9, 12) .. '-' .. _ss(h, 13, 16) .. '-' .. _ss(h, 17, 20)
    .. '-' .. _ss(h, 21, 32)
end
-- An id as the layout keeps it: a UUID as a zero byte and its 16 bytes, anything else as is
-- (no id we are given starts with a zero byte).
local function _id_b(id)
  if #id == 36 and string.find(id, _UUID) then return '\0' .. _uuid_b(id) end
  return id
end
local function _id_t(b)
  if #b == 17 and _sb(b, 1) == 0 then return _uuid_t(_ss(b, 2)) end
  return b
end
local function _typed(kind, v)
  if kind == 'i' then
    if (v == '0' or string.find(v, '^[1-9]%d*$')) and #v <= 15
        and tonumber(v) < 281474976710656 then
      return _i6(tonumber(v))
    end
  elseif kind == 'u' then
    if #v == 36 and string.find(v, _UUID) then return _uuid_b(v) end
  elseif kind == 'h' then
    if #v % 2 == 0 and #v <= 510 and not string.find(v, '[^0-9a-f]') then
      return _sc(#v / 2) .. _h2b(v)
    end
  elseif kind == 'm' then
    if _SCODE[v] then return _sc(_SCODE[v]) end
  elseif kind == 'd' then
    local parts, n = {}, 0
    for d in string.gmatch(v, '[^,]+') do
      if not string.find(d, _DIGEST) then return nil end
      n = n + 1; parts[n] = _h2b(d .. '0')
    end
    if n == 0 or n > 255 or #v ~= n * 34 - 1 then return nil end
    return _sc(n) .. table.concat(parts)
  end
  return nil
end
local function _encode(t)
  local o, n = {}, 0
  for code, f in ipairs(_F) do
    local v = t[f]
    if v ~= nil then
      v = tostring(v)
      local p = _typed(_KIND[f], v)
      n = n + 1
      if p then o[n] = _sc(code) .. p else o[n] = _sc(code + 64) .. _len2(#v) .. v end
    end
  end
  local extra = {}
  for f in pairs(t) do if not _CODE[f] then extra[#extra + 1] = f end end
  table.sort(extra)
  for _, f in ipairs(extra) do
    local v = tostring(t[f])
    n = n + 1
    o[n] = _sc(255, #f) .. f .. _len2(#v) .. v
  end
  return table.concat(o)
end
local function _decode(s)
  local t, p = {}, 1
  while p <= #s do
    local code = _sb(s, p)
    p = p + 1
    if code == 255 then
      local nl = _sb(s, p)
      local f = _ss(s, p + 1, p + nl)
      p = p + 1 + nl
      local vl = _sb(s, p) * 256 + _sb(s, p + 1)
      t[f] = _ss(s, p + 2, p + 1 + vl)
      p = p + 2 + vl
    elseif code > 64 then
      local vl = _sb(s, p) * 256 + _sb(s, p + 1)
      t[_F[code - 64]] = _ss(s, p + 2, p + 1 + vl)
      p = p + 2 + vl
    else
      local f = _F[code]
      local kind = _KIND[f]
      if kind == 'i' then
        t[f] = _sf('%.0f', _u6(s, p)); p = p + 6
      elseif kind == 'u' then
        t[f] = _uuid_t(_ss(s, p, p + 15)); p = p + 16
      elseif kind == 'h' then
        local bl = _sb(s, p)
        t[f] = _b2h(_ss(s, p + 1, p + bl)); p = p + 1 + bl
      elseif kind == 'm' then
        t[f] = _STATES[_sb(s, p)]; p = p + 1
      elseif kind == 'd' then
        local n, parts = _sb(s, p), {}
        for i = 1, n do
          local h = _b2h(_ss(s, p + 1 + 17 * (i - 1), p + 17 * i))
          parts[i] = _ss(h, 1, 33)
        end
        t[f] = table.concat(parts, ','); p = p + 1 + 17 * n
      end
    end
  end
  return t
end

-- A packed record's expiry (ms): read in place, where ``_encode`` always puts it.
local function _expiry(s)
  if _sb(s, 1) == 1 then return _u6(s, 2) end
  return tonumber(_decode(s).xp or '0')
end

-- Records. ``name`` is the record key of the layout before (``...:cb:<id>``): the field
-- of its shard's record hash, or that key itself while no step has rewritten it.
local _R = {}
local function _rk(name)
  local i = string.find(name, ':cb:', 1, true)
  local stem = _ss(name, 1, i)
  return stem .. 'cbs', _id_b(_ss(name, i + 4)), stem, _ss(name, i + 4)
end
local function _owner_of(t)
  if t and _LIVE[t.st] then
    local a = t.a or ''
    if a == '' then a = '-' end
    return a
  end
  return false
end
local function _rload(name)
  local c = _R[name]
  if c then return c end
  local h, f = _rk(name)
  c = {}
  local raw = redis.call('HGET', h, f)
  if raw then
    local t = _decode(raw)
    c.was = _owner_of(t)
    -- Past its expiry a record reads as absent, as a key past its TTL did; the sweep
    -- deletes it later, and ``was`` keeps its owner's count right until then.
    if _expiry(raw) > _now_ms() then c.t = t end
  else
    local flat = redis.call('HGETALL', name)
    if #flat > 0 then
      c.t = {}
      for i = 1, #flat, 2 do c.t[flat[i]] = flat[i + 1] end
      local ttl = redis.call('PTTL', name)
      if ttl > 0 then c.t.xp = tostring(_now_ms() + ttl) end
      c.legacy = true
      c.la = c.t.a or ''
    end
    c.was = false
  end
  _R[name] = c
  return c
end
local _RD, _ZD = {}, {}
local function _rstore(name)
  local c = _R[name]
  local h, f, stem, id = _rk(name)
  local now = _owner_of(c.t)
  if c.t then
    if not c.t.xp then c.t.xp = tostring(_now_ms() + 9 * 86400000) end
    redis.call('HSET', h, f, _encode(c.t))
  else
    redis.call('HDEL', h, f)
  end
  if c.legacy then
    -- Rewritten in the packed form: the old key and its owner's old set entry go.
    redis.call('DEL', name)
    redis.call('ZREM', stem .. 'agent:' .. (c.la ~= '' and c.la or '-') .. ':pending', id)
    c.legacy = false
  end
  if c.was ~= now then
    if c.was then
      if redis.call('HINCRBY', stem .. 'owners', c.was, -1) <= 0 then
        redis.call('HDEL', stem .. 'owners', c.was)
      end
    end
    if now then redis.call('HINCRBY', stem .. 'owners', now, 1) end
    c.was = now
  end
end
local function R_exists(name) if _rload(name).t then return 1 end return 0 end
local function R_get(name, f)
  local t = _rload(name).t
  if t and t[f] ~= nil and f ~= 'xp' then return t[f] end
  return false
end
local function R_mget(name, ...)
  local o = {}
  for i, f in ipairs({...}) do o[i] = R_get(name, f) end
  return o
end
local function R_all(name)
  local t, o = _rload(name).t, {}
  if t then
    local names = {}
    for f in pairs(t) do if f ~= 'xp' then names[#names + 1] = f end end
    table.sort(names)
    for _, f in ipairs(names) do o[#o + 1] = f; o[#o + 1] = t[f] end
  end
  return o
end
local function R_set(name, ...)
  local c = _rload(name)
  if not c.t then c.t = {} end
  local a = {...}
  -- What the packed form cannot hold is refused here, before the step writes anything
  -- after it, not when the step's writes are flushed.
  for i = 1, #a, 2 do
    if #tostring(a[i + 1]) > 65535 or #a[i] > 255 then error('ledger value too long') end
  end
  for i = 1, #a, 2 do c.t[a[i]] = tostring(a[i + 1]) end
  _RD[#_RD + 1] = name
end
local function R_setnx(name, f, v)
  local c = _rload(name)
  if c.t and c.t[f] ~= nil then return 0 end
  R_set(name, f, v)
  return 1
end
local function R_del(name, ...)
  local c = _rload(name)
  if not c.t then return end
  for _, f in ipairs({...}) do c.t[f] = nil end
  _RD[#_RD + 1] = name
end
local function R_incr(name, f, n)
  local c = _rload(name)
  if not c.t then c.t = {} end
  local v = (tonumber(c.t[f] or '0') or 0) + n
  c.t[f] = _sf('%.0f', v)
  _RD[#_RD + 1] = name
  return v
end
local function R_expire(name, ttl_s)
  local c = _rload(name)
  if not c.t then return end
  c.t.xp = _sf('%.0f', _now_ms() + tonumber(ttl_s) * 1000)
  _RD[#_RD + 1] = name
end
local function R_delete(name)
  local c = _rload(name)
  if not c.t and not c.legacy then return end
  c.t = false
  _RD[#_RD + 1] = name
end

-- A number's window (``...:n:<digest>:pending``): one field of its shard's window hash,
-- the expiry then each callback's id and time; or the old sorted set, read once.
local _Z = {}
local function _zk(name)
  local i = string.find(name, ':n:', 1, true)
  local stem = _ss(name, 1, i)
  local d = string.match(_ss(name, i + 3), '^(.*):[^:]*$')
  local f = string.find(d, _DIGEST) and _h2b(d .. '0') or d
  return stem .. 'np', f
end
local function _zsort(e)
  table.sort(e, function(x, y)
    if x[2] ~= y[2] then return x[2] < y[2] end
    return x[1] < y[1]
  end)
end
local function _zload(name)
  local z = _Z[name]
  if z then return z end
  local h, f = _zk(name)
  z = {e = {}, xp = 0}
  local raw = redis.call('HGET', h, f)
  -- A window past its expiry reads as empty, as a sorted set past its TTL did.
  local xp = raw and _u6(raw, 1)
  if xp and xp > _now_ms() then
    z.xp = xp
    local p = 7
    while p <= #raw do
      local id
      if _sb(raw, p) == 0 then
        id = _uuid_t(_ss(raw, p + 1, p + 16)); p = p + 17
      else
        local l = _sb(raw, p)
        id = _ss(raw, p + 1, p + l); p = p + 1 + l
      end
      z.e[#z.e + 1] = {id, _u6(raw, p)}
      p = p + 6
    end
  end
  if redis.call('EXISTS', name) == 1 then
    local old = redis.call('ZRANGE', name, 0, -1, 'WITHSCORES')
    for i = 1, #old, 2 do
      local seen = false
      for _, e in ipairs(z.e) do if e[1] == old[i] then seen = true end end
      if not seen then z.e[#z.e + 1] = {old[i], tonumber(old[i + 1])} end
    end
    local ttl = redis.call('PTTL', name)
    if ttl > 0 then z.xp = math.max(z.xp, _now_ms() + ttl) end
    z.legacy = true
  end
  _zsort(z.e)
  _Z[name] = z
  return z
end
local function _zstore(name)
  local z = _Z[name]
  local h, f = _zk(name)
  if #z.e == 0 then
    redis.call('HDEL', h, f)
  else
    if z.xp == 0 then z.xp = _now_ms() + 9 * 86400000 end
    local o = {_i6(z.xp)}
    for _, e in ipairs(z.e) do
      local b = _id_b(e[1])
      if _sb(b, 1) ~= 0 then b = _sc(#b) .. b end
      o[#o + 1] = b .. _i6(e[2])
    end
    redis.call('HSET', h, f, table.concat(o))
  end
  if z.legacy then redis.call('DEL', name); z.legacy = false end
end
local function Z_score(name, id)
  for _, e in ipairs(_zload(name).e) do
    if e[1] == id then return _sf('%.0f', e[2]) end
  end
  return false
end
local function Z_add(name, score, id)
  if #id == 0 or #id > 255 then error('ledger id empty or too long') end
  local z = _zload(name)
  local s = tonumber(score)
  for i, e in ipairs(z.e) do if e[1] == id then table.remove(z.e, i); break end end
  -- A new window lives as its first ``Z_keep`` says (the default only until then).
  if #z.e == 0 and not z.legacy then z.xp = 0; z.fresh = true end
  z.e[#z.e + 1] = {id, s}
  _zsort(z.e)
  _ZD[#_ZD + 1] = name
end
local function Z_rem(name, id)
  local z = _zload(name)
  for i, e in ipairs(z.e) do
    if e[1] == id then table.remove(z.e, i); _ZD[#_ZD + 1] = name; return 1 end
  end
  if z.legacy then _ZD[#_ZD + 1] = name end
  return 0
end
-- The ids (then times) up to ``max`` ms, earliest first, at most ``limit`` (nil: all).
local function Z_upto(name, max, limit)
  local o = {}
  for _, e in ipairs(_zload(name).e) do
    if e[2] > tonumber(max) or (limit and #o >= limit) then break end
    o[#o + 1] = e
  end
  return o
end
-- Drop the entries before ``before`` ms (ZREMRANGEBYSCORE -inf (before).
local function Z_trim(name, before)
  local z = _zload(name)
  local kept = {}
  for _, e in ipairs(z.e) do if e[2] >= tonumber(before) then kept[#kept + 1] = e end end
  if #kept ~= #z.e or z.legacy then z.e = kept; _ZD[#_ZD + 1] = name end
end
-- Keep the window at least ``ttl_s`` more.
local function Z_keep(name, ttl_s)
  local z = _zload(name)
  local xp = _now_ms() + tonumber(ttl_s) * 1000
  if #z.e > 0 and (xp > z.xp or z.fresh) then
    z.xp = xp; z.fresh = false; _ZD[#_ZD + 1] = name
  end
end

-- The shard's walk (``keys.pending_all``): ids as ``_id_b`` keeps them, the old text ids
-- taken out wherever the new ones go in.
local function W_add(key, score, id)
  local b = _id_b(id)
  redis.call('ZADD', key, score, b)
  if b ~= id then redis.call('ZREM', key, id) end
end
local function W_rem(key, id)
  local b = _id_b(id)
  redis.call('ZREM', key, b)
  if b ~= id then redis.call('ZREM', key, id) end
end
local function W_score(key, id)
  return redis.call('ZSCORE', key, _id_b(id)) or redis.call('ZSCORE', key, id)
end
-- One event ('' or none: nothing) on a number's evidence history, kept ``ttl_s`` after
-- the last; a plain list, written at once.
local function _history(key, event, ttl_s)
  if event == nil or event == '' then return end
  redis.call('RPUSH', key, event)
  redis.call('EXPIRE', key, ttl_s)
end
-- Every record and window changed, written once each (in the order first changed).
local function _flush()
  local done = {}
  for _, name in ipairs(_RD) do
    if not done[name] then done[name] = true; _rstore(name) end
  end
  for _, name in ipairs(_ZD) do
    if not done[name] then done[name] = true; _zstore(name) end
  end
  _RD, _ZD = {}, {}
end
-- end of layer
"""


def with_layer(body: str) -> str:
    """A script that may use the layer's functions: its records and windows are written
    once, when it returns (a step's checks come before its writes, so a step that refuses
    has changed nothing either way)."""
    return LAYER + f"local function _main()\n{body}" + _TAIL


_TAIL: Final = "\nend\nlocal _answer = _main()\n_flush()\nreturn _answer\n"


def compose_layers(bodies: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    """For a script made of several bodies (``client.compose``): the layer once, what to
    run before it answers (the writes, once for all steps), and the bodies alone: their
    steps then share one view of the records they touch."""
    if not any(b.startswith(LAYER) for b in bodies):
        return "", "", bodies
    return LAYER, "_flush()", tuple(_bare(b) for b in bodies)


def _bare(body: str) -> str:
    if not body.startswith(LAYER):
        return body
    inner = body[len(LAYER):]
    head, tail = "local function _main()\n", _TAIL
    return inner[len(head):-len(tail)]


# Records by id, as their field/value lists (empty: none). KEYS: the record of each id.
READ_RECORDS: Final = with_layer("""
local o = {}
for i, name in ipairs(KEYS) do o[i] = R_all(name) end
return o
""")

# A number's pending callbacks up to a time, earliest first, as id, ms, id, ms, ...: each
# once, though it is kept under every digest. KEYS: the number's pending set per digest.
# ARGV: up to ms, at most how many (0: all).
WINDOW_PENDING: Final = with_layer("""
local seen, all = {}, {}
local limit = tonumber(ARGV[2])
for _, name in ipairs(KEYS) do
  for _, e in ipairs(Z_upto(name, ARGV[1], limit > 0 and limit or nil)) do
    if not seen[e[1]] then seen[e[1]] = true; all[#all + 1] = e end
  end
end
_zsort(all)
local o = {}
for i, e in ipairs(all) do
  if limit > 0 and i > limit then break end
  o[#o + 1] = e[1]; o[#o + 1] = _sf('%.0f', e[2])
end
return o
""")
