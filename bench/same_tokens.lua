-- wrk script for the same-tokens baseline (bench/baseline_app.py): POST /token with the form body
-- of a refresh grant, as refresh.lua sends it (one refresh token of the broker's size, 43
-- characters), so both parse the same bytes.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=refresh_token&refresh_token=0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
  .. "&client_id=bench"
