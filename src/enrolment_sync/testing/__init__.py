"""Test doubles and loopback servers for the demo, the tests and the benchmarks; product code never imports it.

- `kvca`: the KVCA simulator (generated Korean data, state with mutations and faults, the contract's HTTP
  app and its `/_control` routes, a runner on a thread and a command line).
- `fake_sheets`: a fake of the Google Sheets API v4, just what gspread calls for the sheet consumer.
- `servers`: an ASGI app on a loopback thread, a JSON webhook receiver, a free port.
- `vendors`: loopback fakes of Kakao Work, JANDI, NAVER WORKS and Dooray! (the Korean chat channels).
- `databases`: scratch databases on a Postgres server, and an embedded server for runs without one.

Only `enrolment-sync simulator` and `enrolment-sync demo` import it, inside the command
(tests/unit/test_layering.py holds the rest of the package to that).
"""
