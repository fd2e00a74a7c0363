#!/usr/bin/env bash
# Set up and run the appliance on its embedded defaults, in ./data:
# DICOM on port 11112 (AE title APPLIANCE), web on http://127.0.0.1:8080,
# and a demo modality registered as STORESCU so DCMTK's storescu can send.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/installer/dev-setup.sh"
cd "$repo"
.venv/bin/appliance modality add STORESCU --exist-ok --description "demo sender"
exec .venv/bin/appliance serve
