# Fixtures: a private store per test, stopped and removed when it ends.

local_store <- function(env = parent.frame()) {
  base <- if (dir.exists("/dev/shm")) "/dev/shm" else tempdir()
  dir <- tempfile("yaplr-test-", tmpdir = base)
  withr::local_options(yaplr.dir = dir, yaplr.timeout = 20, .local_envir = env)
  withr::defer(remove_store(dir), envir = env)
  dir
}

# Stop the store's helper (by signal if it does not answer) and remove the
# directory. unlink() can not remove sockets, hence file.remove().
remove_store <- function(dir) {
  withr::with_options(list(yaplr.dir = dir), {
    try(quit_server(timeout = 20), silent = TRUE)
  })
  lock <- file.path(dir, "yaplrd.lock")
  pid <- suppressWarnings(as.integer(tryCatch(readLines(lock, warn = FALSE)[1L],
                                              error = function(e) NA)))
  if (!is.na(pid) && pid_alive(pid)) {
    tools::pskill(pid, tools::SIGCONT)
    tools::pskill(pid, tools::SIGKILL)
  }
  files <- list.files(dir, all.files = TRUE, no.. = TRUE, full.names = TRUE)
  suppressWarnings(file.remove(files))
  unlink(dir, recursive = TRUE, force = TRUE)
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
