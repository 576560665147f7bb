#!/usr/bin/env bash
# Install Debian's chromium for the headless screenshot test of the rendered site,
# when it is missing and we are allowed to (root with apt-get). Never fails the build.
command -v chromium >/dev/null 2>&1 && exit 0
command -v chromium-browser >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the site screenshot test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    && exit 0
fi
exit 1
