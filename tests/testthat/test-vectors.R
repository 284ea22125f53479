is_view <- function(x) yaplr:::is_shared_view_(x)

test_that("large plain vectors come back as zero-copy views, identical to the original", {
  local_store()
  n <- 1e5
  # Each at least 256 KiB: smaller vectors are copied (see below).
  vecs <- list(
    dbl = runif(n),
    int = sample.int(1000L, n, replace = TRUE),
    lgl = sample(c(TRUE, FALSE, NA), n, replace = TRUE),
    raw = as.raw(sample(0:255, 3 * n, replace = TRUE)),
    cplx = complex(real = runif(n / 5), imaginary = runif(n / 5)),
    named = structure(runif(40000), names = paste0("n", 1:40000)),
    mat = matrix(runif(n), 1000, dimnames = list(NULL, paste0("c", 1:100))),
    date = structure(as.double(1:40000), class = "Date"),
    fac = factor(sample(letters, n, replace = TRUE)),
    special = c(NA, NaN, Inf, -Inf, -0, runif(n))
  )
  for (nm in names(vecs)) send_object(vecs[[nm]], nm)
  for (nm in names(vecs)) {
    got <- retrieve_object(nm)
    expect_identical(got, vecs[[nm]], label = nm)
    expect_true(is_view(got), label = nm)
    copy <- retrieve_object(nm, copy = TRUE)
    expect_identical(copy, vecs[[nm]], label = nm)
    expect_false(is_view(copy), label = nm)
  }
  # Small vectors travel as R serialization.
  send_object(1:10, "small")
  expect_false(is_view(retrieve_object("small")))
})

test_that("vectors from 64 KiB to 256 KiB are stored raw but come back as copies", {
  local_store()
  # A raw vector payload is a 64-byte header and the elements: 32760
  # doubles make 256 KiB exactly.
  cases <- list(inline = runif(8000), raw = runif(8192), mid = runif(30000),
                below = runif(32759), view = runif(32760))
  for (nm in names(cases)) send_object(cases[[nm]], nm)
  for (nm in names(cases)) {
    info <- object_info(nm)
    got <- retrieve_object(nm)
    expect_identical(got, cases[[nm]], label = nm)
    expect_identical(is_view(got), nm == "view", label = nm)
    expect_identical(info$zero_copy, nm == "view", label = nm)
    expect_identical(info$storage, if (nm == "inline") "inline" else "file", label = nm)
    expect_identical(retrieve_objects(nm)[[1L]], cases[[nm]], label = nm)
  }
  # A copy keeps the attributes.
  x <- structure(runif(20000), class = "foo", note = "kept")
  send_object(x, "x")
  got <- retrieve_object("x")
  expect_identical(got, x)
  expect_false(is_view(got))
  expect_false(object_info("x")$zero_copy)
})

test_that("only vectors of 256 KiB or more hold a mapping of the store", {
  skip_if_not(file.exists("/proc/self/maps"))
  dir <- local_store()
  # Mappings of object files (the store's index is mapped once, for lookups).
  mapped <- function() {
    maps <- readLines("/proc/self/maps")
    sum(grepl(dir, maps, fixed = TRUE) & grepl(".yobj", maps, fixed = TRUE))
  }
  send_object(runif(20000), "small") # 160 KB
  send_object(runif(40000), "large") # 320 KB
  before <- mapped()
  small <- lapply(1:100, function(i) retrieve_object("small"))
  expect_identical(mapped(), before)
  large <- lapply(1:100, function(i) retrieve_object("large"))
  # One mapping per live view.
  expect_identical(mapped(), before + 100L)
  rm(small, large)
  invisible(gc())
  expect_identical(mapped(), before)
})

test_that("a view behaves like an ordinary vector and copies on first write", {
  local_store()
  x <- runif(2e5)
  send_object(x, "x")
  v <- retrieve_object("x")
  expect_identical(v[10:20], x[10:20])
  expect_identical(sum(v), sum(x))
  expect_identical(v * 2 + 1, x * 2 + 1)
  expect_identical(sort(v), sort(x))
  expect_identical(unserialize(serialize(v, NULL)), x)
  expect_identical(rev(v), rev(x))
  w <- v
  w[1] <- -1
  expect_identical(w[1], -1)
  expect_identical(v[1], x[1])
  expect_true(is_view(v))
  # Writing to a view changes this vector only (copy-on-write pages).
  v[2] <- 42
  expect_identical(v[2], 42)
  expect_identical(v[-2], x[-2])
  expect_identical(retrieve_object("x"), x)
  # An in-place write through R's C API stays private too.
  u <- retrieve_object("x")
  u[] <- 0
  expect_true(all(u == 0))
  expect_identical(retrieve_object("x"), x)
})

test_that("views stay valid after remove, overwrite and quit", {
  dir <- local_store()
  x <- runif(1e5)
  send_object(x, "x")
  a <- retrieve_object("x")
  send_object(runif(1e5), "x")
  b <- retrieve_object("x")
  remove_object("x")
  quit_server()
  expect_false(dir.exists(dir) && length(store_files(dir)) > 0L)
  expect_identical(a, x)
  expect_identical(length(b), 1e5L)
  expect_identical(sum(a), sum(x))
  rm(a, b)
  invisible(gc())
})

test_that("views of another session's object survive that session and its helper", {
  local_store()
  in_session(function() yaplr::send_object(seq(0, 1, length.out = 3e5), "seq"))
  v <- retrieve_object("seq")
  expect_true(is_view(v))
  quit_server()
  expect_identical(v, seq(0, 1, length.out = 3e5))
})

test_that("sending a large vector needs no intermediate copy", {
  local_store()
  grew <- in_session(function() {
    peak <- function() {
      s <- readLines("/proc/self/status")
      as.numeric(sub("[^0-9]*([0-9]+).*", "\\1", s[startsWith(s, "VmHWM")])) * 1024
    }
    x <- runif(1e7)
    l <- list(a = runif(1e7), b = letters)
    invisible(gc())
    yaplr::send_object(1, "warm-up")
    before <- peak()
    yaplr::send_object(x, "vector")
    yaplr::send_object(l, "list")
    peak() - before
  })
  # Each object is 80 MB; a copy through serialize(x, NULL) would add that.
  expect_lt(grew, 8e6)
})
