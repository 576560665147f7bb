#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the browser tests (the rendered site's
# screenshot, JupyterLab driven through Selenium), when they are missing and we are allowed
# to (root with apt-get). Never fails the build: the tests then skip with the reason.
have() { command -v "$1" >/dev/null 2>&1; }
if (have chromium || have chromium-browser) && have chromedriver; then exit 0; fi
if [ "$(id -u)" = "0" ] && have apt-get; then
  echo "installing chromium and chromium-driver (Debian packages) for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
     chromium-driver >/dev/null) && exit 0
fi
exit 1
