"""Real framework apps (FastAPI, Django, Litestar, Quart) using each framework's own
redirect code and defaults, and the harness that serves them under real uvicorn behind
the RedirectRecorder, drives them with real clients and audits the recorded traffic."""
