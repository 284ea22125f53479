# shared_vector(): writes in place, seen by other processes at once.

test_that("a shared vector is created zeroed, read and written in place", {
  local_store()
  sv <- shared_vector("p", "integer", 5)
  expect_s3_class(sv, "yaplr_shared_vector")
  expect_equal(length(sv), 5)
  expect_identical(sv[], rep(0L, 5))
  sv[2] <- 7
  expect_identical(sv[2], 7L)
  sv[-1] <- 3L
  expect_identical(sv[], c(0L, 3L, 3L, 3L, 3L))
  sv[c(TRUE, FALSE)] <- 9L
  expect_identical(sv[], c(9L, 3L, 9L, 3L, 9L))
  sv[[4]] <- 1L
  expect_identical(sv[[4]], 1L)
  expect_identical(sv[c(1, NA, 10)], c(9L, NA, NA))
  expect_error(sv[6] <- 1L, "never grows", class = "yaplr_bad_argument")
  expect_error(sv[1:2] <- 1:3, "one per element", class = "yaplr_bad_argument")
  expect_error(sv["a"], class = "yaplr_bad_argument")
  for (type in c("double", "logical", "raw")) {
    v <- shared_vector(paste0("t-", type), type, 3)
    expect_identical(v[], vector(type, 3))
  }
  d <- shared_vector("d", length = 3)
  d[] <- c(1.5, NA, Inf)
  expect_identical(d[], c(1.5, NA, Inf))
  l <- shared_vector("t-logical")
  l[2] <- NA
  expect_identical(l[], c(FALSE, NA, FALSE))
})

test_that("writes are seen by forked workers and by other processes at once", {
  dir <- local_store()
  sv <- shared_vector("w", "double", 4)
  parallel::mclapply(1:4, function(i) {
    sv[i] <- i / 2
    NULL
  }, mc.cores = 2)
  expect_identical(sv[], (1:4) / 2)
  p <- callr::r_bg(function(dir) {
    options(yaplr.dir = dir)
    s <- yaplr::shared_vector("w")
    s[1] <- 100
    # Wait for the parent's write, seen without retrieving anything.
    deadline <- Sys.time() + 30
    while (s[2] != 200 && Sys.time() < deadline) Sys.sleep(0.01)
    s[2]
  }, list(dir = dir))
  withr::defer(p$kill())
  wait_until(function() sv[1] == 100, what = "the other process's write")
  sv[2] <- 200
  p$wait(30000)
  expect_identical(p$get_result(), 200)
})

test_that("a shared vector is an object of the store", {
  dir <- local_store()
  sv <- shared_vector("s", "integer", 3)
  sv[] <- 1:3
  expect_identical(retrieve_object("s"), 1:3)
  info <- object_info("s")
  expect_identical(info$class, "yaplr_shared_vector")
  expect_false(info$zero_copy)
  expect_true("s" %in% rownames(list_objects()))
  # Attaching with the same type and length is allowed; another is not.
  again <- shared_vector("s", "integer", 3)
  expect_identical(again[], 1:3)
  expect_error(shared_vector("s", "double", 3), "exists", class = "yaplr_bad_argument")
  send_object(1, "obj")
  expect_error(shared_vector("obj"), "not a shared vector", class = "yaplr_bad_argument")
  expect_error(shared_vector("none"), class = "yaplr_not_found")
  expect_true(all(verify_objects()$ok))
  # A removed vector stays usable where it is attached.
  remove_object("s")
  expect_identical(sv[], 1:3)
  expect_false(does_object_exist("s"))
  # A handle sent elsewhere is detached, and says so.
  x <- unserialize(serialize(sv, NULL))
  expect_error(x[1], "no longer attached", class = "yaplr_bad_argument")
  expect_output(print(x), "detached")
})

test_that("shared_vector arguments are checked", {
  local_store()
  expect_error(shared_vector(), class = "yaplr_bad_tag")
  expect_error(shared_vector("a", "character", 3), "`type` must be", class = "yaplr_bad_argument")
  expect_error(shared_vector("a", "double", -1), class = "yaplr_bad_argument")
  expect_error(shared_vector("a", "double", 1.5), class = "yaplr_bad_argument")
  expect_error(shared_vector("a", "double"), "`length` is missing", class = "yaplr_bad_argument")
})
