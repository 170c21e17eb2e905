"""`tapers ui`: a web panel on 127.0.0.1 to see and control a project's machines.

- auth.py: who may talk to it (the token, the session cookie, CSRF, Origin and Host checks)
- panel.py: what it shows (status rows, the plan, live usage with a short history)
- jobs.py: what its buttons do (the same `tapers` commands, run and streamed)
- server.py: the HTTP routes tying them together; assets/: the page, its script and style
"""
