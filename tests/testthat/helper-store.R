# Fixtures: a private store per test, stopped and removed when it ends.

local_store <- function(env = parent.frame()) {
  base <- if (dir.exists("/dev/shm")) "/dev/shm" else tempdir()
  dir <- tempfile("yaplr-test-", tmpdir = base)
  withr::local_options(yaplr.dir = dir, yaplr.timeout = 20, .local_envir = env)
  withr::defer(
    {
      try(quit_server(timeout = 20), silent = TRUE)
      unlink(dir, recursive = TRUE, force = TRUE)
    },
    envir = env
  )
  dir
}

# Whether a process runs (a zombie does not count).
pid_alive <- function(pid) {
  stat <- suppressWarnings(tryCatch(
    readLines(sprintf("/proc/%d/stat", as.integer(pid)), warn = FALSE),
    error = function(e) character()
  ))
  length(stat) > 0L && !grepl("^[0-9]+ \\(.*\\) Z", stat[1L])
}

# Wait for a condition with a deadline instead of sleeping a fixed time.
wait_until <- function(cond, timeout = 20, what = "a condition") {
  deadline <- Sys.time() + timeout
  while (!cond()) {
    if (Sys.time() > deadline) stop("timed out waiting for ", what)
    Sys.sleep(0.01)
  }
  invisible(TRUE)
}

# Run a function in a fresh R process using the same store.
in_session <- function(fun, args = list(), timeout = 60) {
  callr::r(
    function(dir, fun, args) {
      options(yaplr.dir = dir, yaplr.timeout = 20)
      do.call(fun, args)
    },
    list(dir = getOption("yaplr.dir"), fun = fun, args = args),
    timeout = timeout
  )
}

store_files <- function(dir) {
  list.files(dir, all.files = TRUE, no.. = TRUE)
}

# Signals are asynchronous: wait until /proc shows the process state.
wait_for_state <- function(pid, state) {
  wait_until(function() {
    stat <- tryCatch(readLines(sprintf("/proc/%d/stat", as.integer(pid)), warn = FALSE),
                     error = function(e) "")
    grepl(paste0("^[0-9]+ \\(.*\\) ", state), stat[1L])
  }, what = paste("process", pid, "to reach state", state))
}
