# Progress bars of long transfers, drawn with cli when it is installed.

# Seconds a transfer runs before its progress bar appears, from
# options(yaplr.progress = ): TRUE (the default in an interactive session)
# is 2 seconds, a number is that many seconds, FALSE (the default
# otherwise) or anything else is never (-1).
progress_delay <- function() {
  p <- getOption("yaplr.progress", interactive())
  if (isTRUE(p)) {
    return(2)
  }
  if (is.numeric(p) && length(p) == 1L && !is.na(p) && p >= 0) {
    return(as.double(p))
  }
  -1
}

# Called by the Rust layer only for a transfer that has run longer than
# progress_delay() (never for an object under a few MB), at most ten times
# a second, with interrupts held. Creates the bar (id NULL) or updates it;
# returns its id, or NULL when no bar can be drawn. Never fails.
progress_show <- function(id, label, done, total, status) {
  tryCatch({
    if (!requireNamespace("cli", quietly = TRUE)) {
      return(NULL)
    }
    extra <- list(label = label, status = status)
    if (is.null(id)) {
      format <- if (is.na(total)) {
        "{cli::pb_spin} {cli::pb_extra$label} | {cli::pb_extra$status}"
      } else {
        "{cli::pb_extra$label} {cli::pb_bar} {cli::pb_percent} | {cli::pb_extra$status}"
      }
      id <- cli::cli_progress_bar(
        total = total, format = format, extra = extra, current = FALSE,
        auto_terminate = FALSE, .auto_close = FALSE, .envir = progress_env()
      )
    }
    cli::cli_progress_update(
      set = done, extra = extra, id = id, force = TRUE, .envir = progress_env()
    )
    id
  }, error = function(e) NULL)
}

# Ends the bar of a transfer (done, failed or interrupted).
progress_done <- function(id) {
  tryCatch(cli::cli_progress_done(id = id, .envir = progress_env()), error = function(e) NULL)
  invisible(NULL)
}

# Where cli evaluates the bar's format: the package namespace.
progress_env <- function() environment(progress_delay)
