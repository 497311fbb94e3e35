-- wrk script: POST bodies read from $WRK_BODIES (one JSON document per line), cycled per
-- thread; done() prints a JSON line with throughput and latency percentiles (microseconds).
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

done = function(summary, latency, requests)
  local ps = {}
  for _, p in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9}) do
    ps[#ps + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, "percentiles_us": {%s}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    table.concat(ps, ", ")))
end
