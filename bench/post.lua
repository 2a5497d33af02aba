-- wrk script of bench/run: builds the POST bodies and counts the answers by outcome.
--
-- wrk ... -s bench/post.lua <url> -- <mode> <source> <offset> <kind> <auth> <threads>
--   mode    "new": every request a number never used before, read from the list file
--           <source> (one E.164 number a line, each thread takes every <threads>-th one
--           from line <offset>+1 on); "fixed": every request the number <source>.
--   kind    "create" (create-callback body for the demo agent and queue, consent given,
--           no requested time = as soon as possible) or "find" (find-pending-callbacks).
--   auth    the Authorization header value.
-- At the end it prints one line "BENCH-COUNTS k=v ..." with the totals of all threads.

local AGENT = "a1000000-0000-4000-8000-000000000001"
local QUEUE = "b1000000-0000-4000-8000-000000000001"
local COUNTERS = {"created", "duplicate", "found", "none", "rejected", "deferred", "other",
                  "non200", "wrapped"}

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  mode, source, offset, kind, auth = args[1], args[2], tonumber(args[3]), args[4], args[5]
  nthreads = tonumber(args[6])
  numbers = {}
  if mode == "new" then
    for line in io.lines(source) do numbers[#numbers + 1] = line end
  end
  headers = {["Content-Type"] = "application/json", ["Authorization"] = auth}
  k = 0
  for _, name in ipairs(COUNTERS) do _G[name] = 0 end
end

function request()
  local number = source
  if mode == "new" then
    local i = offset + tid + k * nthreads + 1
    if i > #numbers then
      wrapped = wrapped + 1
      i = ((i - 1) % #numbers) + 1
    end
    number = numbers[i]
    k = k + 1
  end
  local body
  if kind == "find" then
    body = '{"customerNumber": "' .. number .. '"}'
  else
    body = '{"customerNumber": "' .. number .. '", "customerName": "Bench Customer", ' ..
           '"agentId": "' .. AGENT .. '", "queueId": "' .. QUEUE .. '", "consentGiven": true}'
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 then
    non200 = non200 + 1
    return
  end
  if body:find('"outcome": "CREATED"', 1, true) then
    created = created + 1
    if body:find("ASAP_DEFERRED", 1, true) then deferred = deferred + 1 end
  elseif body:find('"outcome": "DUPLICATE"', 1, true) then duplicate = duplicate + 1
  elseif body:find('"outcome": "FOUND"', 1, true) then found = found + 1
  elseif body:find('"outcome": "NONE"', 1, true) then none = none + 1
  elseif body:find('"outcome": "REJECTED"', 1, true) then rejected = rejected + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local parts = {}
  local maxk = 0
  for _, name in ipairs(COUNTERS) do
    local total = 0
    for _, thread in ipairs(threads) do total = total + (thread:get(name) or 0) end
    parts[#parts + 1] = name .. "=" .. total
  end
  for _, thread in ipairs(threads) do
    local used = thread:get("k") or 0
    if used > maxk then maxk = used end
  end
  parts[#parts + 1] = "maxk=" .. maxk
  io.write("BENCH-COUNTS " .. table.concat(parts, " ") .. "\n")
end
