-- wrk script for bench/api.py: every request a distinct, valid submission.
--
--   wrk -t T -c C -d D -s bench/api.lua URL -- MODE POOL OFFSET T
--
-- MODE "submit": POST /api/v1/me/surveys/<instance>/responses with the participant's bearer token,
-- the answers as JSON and an Idempotency-Key of its own. POOL is a file of pre-seeded
-- submissions, one a line: instance id, token, JSON body, separated by tabs. Thread t of T sends
-- pool entries OFFSET + t, OFFSET + t + T, ... so no two requests of a run (nor of runs started
-- at the next offset) share an entry. Past the end of the pool an entry is sent again with a new
-- key ("lap" 1, 2, ...): fine for the baselines, which store nothing or store by key; the real
-- app answers 409 (that instance was answered), which the harness reports as the pool running
-- out.
-- MODE "noop": GET /noop (the bare server answers 204): the load generator's ceiling.
--
-- done() prints one line "WRKJSON {...}": latency percentiles (and 1000 quantiles), requests,
-- duration, socket errors,
-- and per thread the entries it used and its answers by status (non-2xx answers are counted
-- here, not only wrk's >= 400 "status errors").

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local pool = {}

function init(args)
   mode = args[1]
   sent, answered, bad, laps = 0, 0, 0, 0
   statuses = {}
   first_bad = ""
   if mode == "submit" then
      for line in io.lines(args[2]) do
         local instance, token, body = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
         pool[#pool + 1] = {instance, token, body}
      end
      offset = tonumber(args[3])
      stride = tonumber(args[4])
   elseif mode ~= "noop" then
      error("bench/api.lua: unknown mode " .. tostring(mode))
   end
end

function request()
   if mode == "noop" then
      sent = sent + 1
      return wrk.format("GET", "/noop")
   end
   local index = offset + id + sent * stride -- 0-based, distinct across threads and runs
   sent = sent + 1
   local lap = math.floor(index / #pool)
   if lap > laps then laps = lap end
   local entry = pool[index % #pool + 1]
   local headers = {
      ["Authorization"] = "Bearer " .. entry[2],
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "bench-" .. entry[1] .. "-" .. lap,
   }
   return wrk.format("POST", "/api/v1/me/surveys/" .. entry[1] .. "/responses", headers,
                     entry[3])
end

function response(status, headers, body)
   answered = answered + 1
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if status < 200 or status > 299 then
      bad = bad + 1
      if first_bad == "" then
         first_bad = key .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

local function quote(s)
   return '"' .. string.gsub(s, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local per_thread = {}
   for _, thread in ipairs(threads) do
      local counts = {}
      for code, n in pairs(thread:get("statuses")) do -- thread:get copies the table
         counts[#counts + 1] = quote(code) .. ":" .. n
      end
      per_thread[#per_thread + 1] = string.format(
         '{"id":%d,"sent":%d,"answered":%d,"non_2xx":%d,"laps":%d,"statuses":{%s},'
         .. '"first_bad":%s}',
         thread:get("id"), thread:get("sent"), thread:get("answered"), thread:get("bad"),
         thread:get("laps"), table.concat(counts, ","), quote(thread:get("first_bad")))
   end
   -- 1000 quantiles (0.05 %, 0.15 %, ... 99.95 %): bench/api.py merges them, weighted by each
   -- run's requests, into the latency percentiles over all rounds
   local quantiles = {}
   if summary.requests > 0 then
      for i = 0, 999 do
         quantiles[#quantiles + 1] = latency:percentile(i / 10 + 0.05)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"status_errors":%d,"quantiles_us":[%s],"threads":[%s]}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, e.connect, e.read, e.write, e.timeout, e.status, table.concat(quantiles, ","),
      table.concat(per_thread, ",")))
end
