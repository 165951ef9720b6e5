-- wrk script for introspection of many refresh tokens: POST /introspect, the tokens in turn.
--
-- Usage: wrk -t1 ... -s bench/introspect.lua URL -- TOKENS_FILE BASIC_CREDENTIALS
-- Reads TOKENS_FILE (one refresh token per line, all of the authenticating client) and cycles
-- through them, authenticating with "Authorization: Basic BASIC_CREDENTIALS". An answer that is
-- not 200 with "active": true counts as failed. done() prints "bench-lua key=value" lines that
-- bench/wrk.py parses: requests sent, active answers, failures, and the first failure seen.

local tokens = {}
local available = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

sent = 0
ok = 0
failed = 0
first_error = ""

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      available = available + 1
      tokens[available] = line
    end
  end
  headers["Authorization"] = "Basic " .. args[2]
end

function request()
  sent = sent + 1
  local token = tokens[(sent - 1) % available + 1]
  local body = "token=" .. token .. "&token_type_hint=refresh_token"
  return wrk.format("POST", "/introspect", headers, body)
end

function response(status, _headers, body)
  if status == 200 and string.find(body or "", '"active":%s*true') then
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
    print("bench-lua first_error=" .. thread:get("first_error"))
  end
end
