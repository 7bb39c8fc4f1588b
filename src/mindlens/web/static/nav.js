// The explain page's link to the audit view (/audit), shown when the server serves audits.
"use strict";

fetch("/api/audits", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : []))
  .then((audits) => { document.getElementById("audit-link").hidden = !audits.length; })
  .catch(() => {});
