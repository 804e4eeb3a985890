-- wrk script for bench/serving.py: POST /v1/recall for random users with history.
-- BENCH_USERS users named u0..u<n-1>, BENCH_K items each; prints one JSON line when done.
local users = tonumber(os.getenv("BENCH_USERS") or "2000")
local k = tonumber(os.getenv("BENCH_K") or "200")
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  local body = string.format('{"user_id":"u%d","k":%d}', math.random(0, users - 1), k)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
