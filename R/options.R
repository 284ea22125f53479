# Options of yaplr, all read through the helpers below.

#' Options that control yaplr
#'
#' @description
#' * `yaplr.dir`: the store directory. Default: the environment variable
#'   `YAPLR_DIR` if set, otherwise `/dev/shm/yaplr-<uid>` (in RAM). Sessions
#'   that use different directories never see each other's objects. Any
#'   directory of your own works (it is created if needed and made private,
#'   mode 0700); on a disk the objects persist on disk. The root directory,
#'   directories every user may write to (such as `/tmp`), system
#'   directories and your home directory are refused with a `yaplr_store`
#'   error: use a subdirectory of your own instead.
#' * `yaplr.timeout`: how many seconds any call may wait (for the helper to
#'   start or to answer) before it fails with a `yaplr_timeout` error.
#'   Default 10. Every function also takes a `timeout` argument.
#' * `yaplr.namespace`: the namespace of objects when a function is not given
#'   one. Default `"default"`.
#' * `yaplr.capacity`: the capacity given to a helper when a call starts
#'   one, as bytes or a string like `"2 GB"` (see [resize_store()]). Default
#'   none: the store may fill its filesystem.
#' * `yaplr.automatic_server_start`: whether a call that finds no helper
#'   starts one. Default `TRUE`. With `FALSE`, such a call fails with a
#'   `yaplr_no_server` error until [make_sure_server_is_started()] is called.
#' * `yaplr.progress`: whether a transfer that runs longer than about 2
#'   seconds (a send, a retrieve that copies, [send_objects()],
#'   [retrieve_objects()]) shows a progress bar with the bytes done, the rate
#'   and the time left. Default `interactive()`: shown in an interactive
#'   session, never under `Rscript`. A number sets the delay in seconds. The
#'   bar is drawn by the cli package when it is installed (nothing is shown
#'   otherwise); objects under a few MB never show one. Ctrl-C stops any
#'   transfer within a few MB, whatever this option.
#'
#' @name yaplr-options
#' @examples
#' getOption("yaplr.timeout", 10)
#' store_dir()
NULL

#' The store directory in use
#'
#' @return The absolute path of the store directory that yaplr functions in
#'   this session use (see [yaplr-options]).
#' @export
#' @examples
#' store_dir()
store_dir <- function() {
  dir <- dir_option()
  # Every call resolves the store: remember the last answer.
  if (identical(dir, the$dir_in)) {
    return(the$dir_out)
  }
  # Errors name the call that needed the store (or store_dir() itself).
  out <- resolve_store_dir(dir, call = sys.call(sys.parent()))
  if (!nzchar(dir) || startsWith(dir, "/") || startsWith(dir, "~")) {
    the$dir_in <- dir
    the$dir_out <- out
  }
  out
}

# getOption("yaplr.dir"), else the environment variable YAPLR_DIR.
dir_option <- function() {
  dir <- getOption("yaplr.dir")
  if (is.null(dir)) Sys.getenv("YAPLR_DIR", "") else dir
}

# The session handle of the store in use (store_dir()), or the condition of
# a store directory that can not be used, which the glue raises after the
# arguments the call checks first.
session <- function() {
  if (identical(dir_option(), the$dir_in)) {
    return(session_of(the$dir_out))
  }
  dir <- tryCatch(store_dir(), yaplr_error = identity)
  if (inherits(dir, "yaplr_error")) {
    return(dir)
  }
  session_of(dir)
}

# The session handle of the store directory `dir` (resolved): an external
# pointer the glue makes on first use and every call takes, kept for the
# R session (a forked child uses its parent's). A handle learns
# options(yaplr.capacity = ) when it is made and whenever the option changes,
# and gives it to a helper that a call starts.
session_of <- function(dir) {
  h <- the$sessions[[dir]]
  if (is.null(h)) {
    # Each handle keeps a connection to its store's helper: a session that
    # goes through many stores lets the old handles go.
    if (length(the$sessions) >= 16L) the$sessions <- new.env(parent = emptyenv())
    h <- session_new_(dir, helper_path(), capacity_option())
    the$sessions[[dir]] <- h
  }
  capacity <- getOption("yaplr.capacity")
  if (!identical(capacity, the$capacity)) {
    parsed <- capacity_option()
    for (s in as.list(the$sessions)) session_set_capacity_(s, parsed)
    the$capacity <- capacity
  }
  h
}

resolve_store_dir <- function(dir, call = caller_call()) {
  if (!is.character(dir) || length(dir) != 1L || is.na(dir)) {
    abort_yaplr(
      "bad_argument",
      "options(yaplr.dir = ) must be a single directory path, not {describe(dir)}.",
      call = call
    )
  }
  if (!is_valid_text(dir)) {
    abort_yaplr(
      "bad_argument",
      "options(yaplr.dir = ) must be valid text in UTF-8, latin1 or the session's encoding.",
      call = call
    )
  }
  if (!nzchar(dir)) {
    return(default_store_dir_())
  }
  path <- path.expand(dir)
  if (!startsWith(path, "/")) {
    path <- file.path(normalizePath(".", mustWork = TRUE), path)
  }
  # One spelling per directory, checked and used as is: no empty, "." or
  # ".." parts, no trailing slash ("/tmp//x/./" and "/tmp/x/y/.." are
  # "/tmp/x"; "/", "//" and "/tmp/.." are "/").
  parts <- character()
  for (p in strsplit(path, "/", fixed = TRUE)[[1L]]) {
    if (p == "..") {
      parts <- parts[-length(parts)]
    } else if (nzchar(p) && p != ".") {
      parts <- c(parts, p)
    }
  }
  path <- paste0("/", paste(parts, collapse = "/"))
  check_store_path(path, dir, call)
  path
}

# A store directory is made private (mode 0700) and filled with the helper's
# files: refuse directories that are not the user's own to give, before the
# helper touches them. `given` is the path as the user wrote it.
check_store_path <- function(path, given, call) {
  as_given <- if (identical(given, path)) "" else paste0(" (given as ", quote_text(given), ")")
  refuse <- function(what, example) {
    abort_yaplr("store", paste0(
      "the store directory \"{path}\"{as_given} is {what}, so it can not be a store ",
      "(yaplr makes its store private and fills it with its files); choose a directory ",
      "of your own with options(yaplr.dir = ), such as \"{example}\""
    ), call = call)
  }
  default <- default_store_dir_()
  real <- path
  if (dir.exists(path) && !nzchar(Sys.readlink(path))) {
    real <- normalizePath(path, mustWork = FALSE)
  }
  if (real == "/") {
    refuse("the root directory, shared by every user of the system", default)
  }
  if (identical(real, normalizePath(path.expand("~"), mustWork = FALSE))) {
    refuse("your home directory", file.path(real, "yaplr-store"))
  }
  # Writable by all, or sticky (as /tmp and /dev/shm): shared.
  mode <- file.info(real)$mode
  if (!is.na(mode) && bitwAnd(as.integer(mode), strtoi("1002", 8L)) != 0L) {
    refuse("shared by every user of the system (anyone may create files in it)",
           file.path(real, basename(default)))
  }
  if (real %in% system_dirs) {
    refuse("a system directory, shared by every user of the system", default)
  }
  invisible()
}

# Directories of the system that no user's store may take over.
system_dirs <- c(
  "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
  "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/run/user", "/sbin", "/srv",
  "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/local", "/usr/share", "/var",
  "/var/lib", "/var/tmp", "/dev/shm"
)

yaplr_namespace <- function() {
  getOption("yaplr.namespace", "default")
}

yaplr_timeout <- function() {
  getOption("yaplr.timeout", 10)
}

# The argument automatic_server_start, or the option when it is NULL (the
# glue checks either).
autostart_option <- function(automatic_server_start) {
  if (is.null(automatic_server_start)) {
    return(getOption("yaplr.automatic_server_start", TRUE))
  }
  automatic_server_start
}

# The helper program, looked up once per session.
helper_path <- function() {
  path <- the$helper
  if (is.null(path)) {
    path <- system.file("bin", "yaplrd", package = "yaplr")
    the$helper <- path
  }
  path
}

the <- new.env(parent = emptyenv())
the$sessions <- new.env(parent = emptyenv())

# Sizes as bytes: a number, or a string such as "2 GB", "512 MiB", "100kB".
parse_size <- function(x, arg, call = caller_call()) {
  bad <- function() {
    abort_yaplr("bad_argument",
      "`{arg}` must be a number of bytes or a size such as \"2 GB\", not {describe(x)}.",
      call = call
    )
  }
  if (is.numeric(x) && length(x) == 1L && !is.na(x) && is.finite(x) && x >= 0) {
    return(as.double(x))
  }
  if (!is.character(x) || length(x) != 1L || is.na(x)) bad()
  m <- regmatches(x, regexec("^\\s*([0-9]+(\\.[0-9]+)?)\\s*([a-zA-Z]*)\\s*$", x))[[1L]]
  if (length(m) == 0L) bad()
  units <- c(b = 1, kb = 1e3, mb = 1e6, gb = 1e9, tb = 1e12,
             kib = 2^10, mib = 2^20, gib = 2^30, tib = 2^40, k = 1e3, m = 1e6, g = 1e9, t = 1e12)
  unit <- tolower(m[4L])
  if (!nzchar(unit)) unit <- "b"
  if (!unit %in% names(units)) bad()
  floor(as.numeric(m[2L]) * units[[unit]])
}

# A size argument for the glue: NULL, the bytes, or the condition of a bad
# size, which the glue raises after the arguments the call checks first.
size_arg <- function(x, arg) {
  if (is.null(x)) {
    return(NULL)
  }
  tryCatch(parse_size(x, arg), yaplr_error = identity)
}

# getOption("yaplr.capacity") in bytes, NaN when unset, given to every
# session handle (which applies it when its call starts a helper).
capacity_option <- function() {
  cap <- getOption("yaplr.capacity")
  if (is.null(cap)) {
    return(NaN)
  }
  # A bad value comes back as its message, for the glue to raise.
  tryCatch(parse_size(cap, "options(yaplr.capacity = )"), error = conditionMessage)
}
