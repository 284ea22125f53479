# Coordinating processes: barriers (counters, locks and queues beside them).

#' Wait until n processes reach a barrier
#'
#' `barrier()` blocks until `n` processes (this one included) have called
#' `barrier()` with the same `name` and `n`, then returns `TRUE` in all of
#' them at once. A barrier is reusable: once released, the next `n` calls
#' form the next round.
#'
#' A process that times out (a condition of class `yaplr_timeout` naming
#' how many others had arrived), is interrupted with Ctrl-C, or dies while
#' waiting withdraws its arrival, so it never counts towards a later round.
#' Calls with a different `n` while others wait are refused with
#' `yaplr_bad_argument`. Barriers are kept by the helper in memory: if it is
#' restarted while processes wait, they arrive again at the new helper
#' within their timeout.
#'
#' @param name The barrier's name: a single non-empty string of at most
#'   1024 bytes.
#' @param n How many processes the barrier waits for, a whole number of at
#'   least 1.
#' @param timeout The most seconds to wait. Default
#'   `getOption("yaplr.timeout", 10)`.
#' @param namespace The namespace of the barrier. Default
#'   `getOption("yaplr.namespace", "default")`.
#' @return `TRUE`, once `n` processes have arrived.
#' @seealso [wait_object()] and [take_object()].
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' # One process alone passes a barrier for one.
#' barrier("start", n = 1)
#' # Two processes meet (mclapply forks a worker; not on Windows).
#' if (.Platform$OS.type == "unix") {
#'   res <- parallel::mclapply(1:2, function(i) barrier("meet", n = 2, timeout = 20),
#'                             mc.cores = 2)
#'   print(unlist(res))
#' }
#' quit_server()
#' options(old)
#' @export
barrier <- function(name, n, timeout = yaplr_timeout(), namespace = yaplr_namespace()) {
  if (missing(name)) abort_missing_name()
  if (missing(n)) abort_yaplr("bad_argument", "`n` is missing; give the number of processes.")
  check_result(barrier_(session(), name, n, namespace, timeout, autostart_option(NULL)))
}
