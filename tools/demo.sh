#!/usr/bin/env bash
# A two-session demonstration: one Rscript sends an object and exits, a
# second one lists, retrieves, removes it and stops the helper.
set -euo pipefail
STORE="${YAPLR_DIR:-/dev/shm/yaplr-demo-$(id -u)}"
export YAPLR_DIR="$STORE"

echo "== session 1 (pid will exit after sending), store: $STORE"
Rscript -e '
library(yaplr)
cat("session 1: pid", Sys.getpid(), "\n")
send_object(obj = 1:10, tag = "myobject")
send_object(obj = head(mtcars), tag = "cars")
cat("session 1: sent \"myobject\" and \"cars\"; helper running:", is_server_running(), "\n")
'
echo "== session 1 has exited"
echo "== session 2"
Rscript -e '
library(yaplr)
cat("session 2: pid", Sys.getpid(), "\n")
print(list_objects())
x <- retrieve_object(tag = "myobject")
cat("session 2: retrieve_object(\"myobject\") ->", x, "\n")
cat("session 2: identical cars:", identical(retrieve_object("cars"), head(mtcars)), "\n")
remove_object("myobject")
cat("session 2: after remove_object, exists:", does_object_exist("myobject"), "\n")
res <- tryCatch(retrieve_object("myobject"), yaplr_not_found = function(e) conditionMessage(e))
cat("session 2: retrieving it again gives:", res, "\n")
quit_server()
cat("session 2: quit_server() done; helper running:", is_server_running(), "\n")
'
if pgrep -x yaplrd >/dev/null 2>&1 && ps -o stat= -p "$(pgrep -x yaplrd | tr '\n' ',' | sed 's/,$//')" | grep -qv Z; then
  echo "== a yaplrd process still runs (another store may use it)"
else
  echo "== no yaplrd process runs"
fi
if [ -d "$STORE" ] && [ -n "$(ls -A "$STORE")" ]; then
  echo "== store directory $STORE still holds: $(ls -A "$STORE")"; exit 1
else
  echo "== store directory $STORE is gone"
fi
