#!/usr/bin/env python3
"""Every kind of audit record the coordinator writes is one `fedc audit show --kind`
accepts and docs/operations.md's audit table lists.

Written: the string literal of each fc_audit_append(..., "KIND", ...) under
coordinator/, and "contact" (fc_audit_contact). Accepted: the `kinds` array in
coordinator/audit.c. Documented: the table rows "| `KIND` |" (or "| `A`, `B` |")
in docs/operations.md. Exit 1 naming what is missing."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
written = {"contact"}
for f in sorted((root / "coordinator").glob("*.c")):
    written.update(re.findall(r'fc_audit_append\(\s*[^,()]+,\s*"([a-z_]+)"', f.read_text()))
arr = re.search(r"static const char \*const kinds\[\] = \{(.*?)\};", (root / "coordinator/audit.c").read_text(), re.S)
if not arr:
    sys.exit("check-audit-kinds: no kinds array in coordinator/audit.c")
accepted = set(re.findall(r'"([a-z_]+)"', arr.group(1)))
documented = set()
for a, b in re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", (root / "docs/operations.md").read_text(), re.M):
    documented.update(k for k in (a, b) if k)
missing = [f"audit kind '{k}' is written but not in coordinator/audit.c's kinds (fedc audit show --kind refuses it)"
           for k in sorted(written - accepted)]
missing += [f"audit kind '{k}' is written but has no row in docs/operations.md's audit table"
            for k in sorted(written - documented)]
print("\n".join(missing) if missing else f"{len(written)} audit kinds written, all accepted and documented")
sys.exit(1 if missing else 0)
