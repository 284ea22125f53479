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

# The pid of the helper serving `dir`, read from its lock file, or NA when no
# live yaplrd process is named there (a reused pid is never returned).
helper_pid_from_lock <- function(dir) {
  txt <- tryCatch(suppressWarnings(readLines(file.path(dir, "yaplrd.lock"), warn = FALSE)),
                  error = function(e) character())
  pid <- suppressWarnings(as.integer(txt[1L]))
  if (length(pid) != 1L || is.na(pid) || !pid_alive(pid)) return(NA_integer_)
  comm <- tryCatch(suppressWarnings(readLines(sprintf("/proc/%d/comm", pid), warn = FALSE)),
                   error = function(e) "")
  if (!identical(comm, "yaplrd")) return(NA_integer_)
  pid
}

# The object files of a store (small objects live in the helper's journal
# and have none) with the state (WRITING = 1, COMMITTED = 2), creator pid and
# tag of their headers; NA where the header is not written yet.
object_headers <- function(dir) {
  files <- list.files(dir, pattern = "^[0-9a-f]{32}\\.yobj$", full.names = TRUE)
  magic <- charToRaw("YAPLROBJ")
  none <- list(state = NA_integer_, pid = NA_integer_, tag = NA_character_)
  one <- function(f) {
    con <- tryCatch(suppressWarnings(file(f, "rb")), error = function(e) NULL)
    if (is.null(con)) return(none)
    on.exit(close(con))
    h <- readBin(con, "raw", 64L + 1024L)
    if (length(h) < 64L || !identical(h[1:8], magic)) return(none)
    int <- function(at) readBin(h[at + 1:4], "integer", size = 4L, endian = "little")
    n <- int(44L)
    tag <- if (n >= 1L && n <= 1024L && length(h) >= 64L + n) rawToChar(h[64L + seq_len(n)]) else NA
    list(state = int(12L), pid = int(20L), tag = tag)
  }
  rows <- lapply(files, one)
  data.frame(
    file = files,
    state = vapply(rows, `[[`, integer(1), "state"),
    pid = vapply(rows, `[[`, integer(1), "pid"),
    tag = vapply(rows, `[[`, character(1), "tag"),
    stringsAsFactors = FALSE
  )
}
