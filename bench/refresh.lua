-- wrk script for the refresh grant: POST /token, each request with a refresh token never used.
--
-- Usage: wrk -t1 ... -s bench/refresh.lua URL -- TOKENS_FILE OFFSET [CLIENT_ID]
-- Reads TOKENS_FILE (one token per line) from line OFFSET+1 on; the tokens are CLIENT_ID's
-- (default "bench"). Run it with -t1: the token counter lives in the single thread's Lua state.
-- done() prints "bench-lua key=value" lines that bench/wrk.py parses: tokens consumed, 200s,
-- non-200s, and the first error seen.

local tokens = {}
local available = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local client_id = "bench"

sent = 0
ok = 0
failed = 0
exhausted = 0
first_error = ""

function init(args)
  local path = args[1]
  local offset = tonumber(args[2] or "0")
  client_id = args[3] or client_id
  local line_number = 0
  for line in io.lines(path) do
    line_number = line_number + 1
    if line_number > offset and #line > 0 then
      available = available + 1
      tokens[available] = line
    end
  end
end

function request()
  local token
  if sent < available then
    sent = sent + 1
    token = tokens[sent]
  else
    -- Out of tokens: stop this thread rather than present a rotated token again (which
    -- would revoke its session). The request below fails and is counted.
    exhausted = exhausted + 1
    token = "exhausted"
    wrk.thread:stop()
  end
  local body = "grant_type=refresh_token&refresh_token=" .. token .. "&client_id=" .. client_id
  return wrk.format("POST", "/token", headers, body)
end

function response(status, _headers, body)
  if status == 200 then
    ok = ok + 1
  else
    failed = failed + 1
    if first_error == "" then
      first_error = status .. " " .. string.gsub(body or "", "%s+", " ")
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    print("bench-lua sent=" .. thread:get("sent"))
    print("bench-lua ok=" .. thread:get("ok"))
    print("bench-lua failed=" .. thread:get("failed"))
    print("bench-lua exhausted=" .. thread:get("exhausted"))
    print("bench-lua first_error=" .. thread:get("first_error"))
    if thread:get("exhausted") > 0 then
      print("WARNING: the refresh tokens ran out; seed more with --tokens")
    end
  end
end
