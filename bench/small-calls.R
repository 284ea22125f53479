# Time of one small send, retrieve and existence check from R (the
# installed yaplr): three rounds of 5,000 calls of a 100-byte object.
#
#   Rscript bench/small-calls.R
suppressPackageStartupMessages(library(yaplr))
options(yaplr.dir = tempfile("yaplr-small-", "/dev/shm"))
x <- runif(9)
send_object(x, "warm")
n <- 5000
for (r in 1:3) {
  t0 <- Sys.time()
  for (i in 1:n) send_object(x, "t")
  ts <- as.numeric(Sys.time() - t0, units = "secs") / n
  t0 <- Sys.time()
  for (i in 1:n) retrieve_object("t")
  tr <- as.numeric(Sys.time() - t0, units = "secs") / n
  t0 <- Sys.time()
  for (i in 1:n) does_object_exist("t")
  te <- as.numeric(Sys.time() - t0, units = "secs") / n
  cat(sprintf("yaplr %s: send %.1f us, retrieve %.1f us, exists %.1f us\n", packageVersion("yaplr"),
              ts * 1e6, tr * 1e6, te * 1e6))
}
invisible(quit_server())
