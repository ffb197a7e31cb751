"""The web console in a real browser: runs tests/browser/console.test.mjs (node's test
runner + playwright-core driving Debian's /usr/bin/chromium), which starts the release
host with its embedded default config. `just browser-setup` installs Chromium and the
npm package; screenshots land in tests/out/browser/ and docs/console.png."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.timeout(900)
def test_console_in_chromium():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: run `just browser-setup` (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set: the browser test may not be skipped)")
        pytest.skip(reason)
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not on PATH: the browser test needs Node.js 20+ and npm")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        install = ["npm", "ci"] if (BROWSER_DIR / "package-lock.json").exists() else ["npm", "install"]
        r = subprocess.run(install + ["--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{' '.join(install)} failed in {BROWSER_DIR}:\n{r.stdout}\n{r.stderr}"
    r = subprocess.run(["node", "--test", "--test-concurrency=1", "console.test.mjs"], cwd=BROWSER_DIR,
                       capture_output=True, text=True, timeout=840)
    if r.returncode != 0:
        failures = "\n".join(line for line in r.stdout.splitlines()
                             if line.startswith("not ok") or line.strip().startswith("error:"))
        pytest.fail(f"the browser test failed (screenshots and nnhost.log in tests/out/browser/):\n{failures}\n\n"
                    f"{r.stdout[-12000:]}\n{r.stderr[-4000:]}", pytrace=False)
