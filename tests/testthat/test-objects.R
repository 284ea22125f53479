test_that("objects of every kind round-trip identically", {
  local_store()
  setClass("YaplrTestPoint", representation(x = "numeric", y = "numeric"))
  withr::defer(removeClass("YaplrTestPoint"))
  e <- new.env()
  assign("a", 1:3, envir = e)
  latin <- "caf\xe9"
  Encoding(latin) <- "latin1"
  objects <- list(
    int = 1:10,
    dbl = c(1.5, NA, NaN, Inf, -Inf),
    lgl = c(TRUE, NA, FALSE),
    chr = c("a", NA, "\u00e9t\u00e9", ""),
    latin1 = latin,
    cplx = complex(real = 1:3, imaginary = -1),
    raw = as.raw(0:255),
    null = NULL,
    empty_int = integer(),
    empty_chr = character(),
    list = list(a = 1, b = list(c = "x", d = NULL)),
    df = data.frame(x = 1:3, f = factor(c("a", "b", "a")), stringsAsFactors = FALSE),
    factor = factor(c("lo", "hi", "lo"), levels = c("lo", "hi")),
    matrix = matrix(1:6, 2, dimnames = list(c("r1", "r2"), NULL)),
    attrs = structure(1:3, myattr = "hello", names = c("a", "b", "c")),
    fun = function(x) x + 1,
    s4 = new("YaplrTestPoint", x = 1, y = 2),
    formula = stats::as.formula("y ~ x + z", env = globalenv()),
    big = runif(1e5)
  )
  for (name in names(objects)) {
    send_object(objects[[name]], name)
  }
  for (name in names(objects)) {
    got <- retrieve_object(name)
    if (name == "fun") {
      expect_equal(got(1), 2)
      expect_identical(deparse(got), deparse(objects[[name]]))
    } else {
      expect_identical(got, objects[[name]], label = name)
    }
  }
  expect_identical(Encoding(retrieve_object("latin1")), "latin1")
  env <- local({
    send_object(e, "env")
    retrieve_object("env")
  })
  expect_true(is.environment(env))
  expect_identical(get("a", envir = env), 1:3)
})

test_that("a second send replaces the value; list, exists and remove agree", {
  dir <- local_store()
  send_object(1, "b")
  send_object("first", "a")
  send_object("second", "a")
  expect_identical(retrieve_object("a"), "second")
  lst <- list_objects()
  expect_s3_class(lst, "data.frame")
  expect_identical(rownames(lst), c("a", "b"))
  expect_identical(names(lst)[1:2], c("size", "ctime"))
  expect_s3_class(lst$ctime, "POSIXct")
  expect_true(all(lst$size > 0))
  expect_true(all(abs(as.numeric(Sys.time()) - as.numeric(lst$ctime)) < 600))
  # Small objects live in the helper's journal: no file each.
  expect_length(grep("\\.yobj$", store_files(dir)), 0L)
  # A large object has one file; overwriting it removes the old one.
  send_object(runif(1e5), "big")
  send_object(runif(1e5), "big")
  expect_length(grep("\\.yobj$", store_files(dir)), 1L)
  send_object("small now", "big")
  expect_length(grep("\\.yobj$", store_files(dir)), 0L)
  remove_object("big")
  expect_true(does_object_exist("a"))
  expect_null(remove_object("a"))
  expect_false(does_object_exist("a"))
  expect_identical(rownames(list_objects()), "b")
})

test_that("an empty store lists as an empty data frame with the columns", {
  local_store()
  lst <- list_objects()
  expect_identical(nrow(lst), 0L)
  expect_identical(names(lst)[1:2], c("size", "ctime"))
  expect_s3_class(lst$ctime, "POSIXct")
})

test_that("any string is a tag and never a file name", {
  dir <- local_store()
  tags <- c("../../etc/passwd", "a/b", "with space", "\u00e9\u00e8\u4e2d", strrep("x", 1024), ".", "-")
  for (i in seq_along(tags)) send_object(i, tags[i])
  for (i in seq_along(tags)) expect_identical(retrieve_object(tags[i]), i)
  expect_setequal(rownames(list_objects()), tags)
  files <- store_files(dir)
  expect_false(any(files %in% tags))
  expect_false(file.exists(file.path(dirname(dir), "etc")))
})

test_that("send_object and friends accept yaplr 0.1 arguments", {
  local_store()
  # It returns the version of the stored value, invisibly.
  expect_invisible(v <- send_object(obj = 1:10, tag = "myobject", automatic_server_start = TRUE,
                                    check_server_with_ping = FALSE))
  expect_equal(v, object_info("myobject")$version)
  expect_identical(retrieve_object(tag = "myobject", check_server_with_ping = TRUE), 1:10)
  expect_true(does_object_exist(tag = "myobject", automatic_server_start = NULL))
  expect_null(remove_object(tag = "myobject", check_server_with_ping = FALSE))
})

test_that("namespaces keep the same tag apart", {
  local_store()
  send_object("A", "x", namespace = "app1")
  send_object("B", "x", namespace = "app2")
  send_object("D", "x")
  expect_identical(retrieve_object("x", namespace = "app1"), "A")
  expect_identical(retrieve_object("x", namespace = "app2"), "B")
  expect_identical(retrieve_object("x"), "D")
  withr::with_options(list(yaplr.namespace = "app2"), {
    expect_identical(retrieve_object("x"), "B")
    expect_identical(rownames(list_objects()), "x")
  })
  expect_false(does_object_exist("x", namespace = "app3"))
  err <- expect_error(retrieve_object("x", namespace = "app3"), class = "yaplr_not_found")
  expect_match(conditionMessage(err), "app3")
  all <- list_objects(namespace = NULL)
  expect_identical(all$namespace, c("app1", "app2", "default"))
  expect_identical(all$tag, c("x", "x", "x"))
  expect_identical(names(all)[1:2], c("size", "ctime"))
  send_object(runif(1e5), "big", namespace = "app1")
  expect_identical(remove_objects("app1"), 2)
  expect_false(does_object_exist("big", namespace = "app1"))
  expect_identical(retrieve_object("x", namespace = "app2"), "B")
  expect_identical(remove_objects("nothing-here"), 0)
  for (bad in list(NA_character_, "", c("a", "b"), 1, strrep("n", 257))) {
    expect_error(send_object(1, "x", namespace = bad), class = "yaplr_bad_argument")
    expect_error(remove_objects(bad), class = "yaplr_bad_argument")
  }
})

test_that("object_info() and list_objects() describe objects; versions increase", {
  local_store()
  df <- data.frame(a = 1:3, b = c("x", "y", "z"))
  send_object(df, "df", description = "three rows")
  info <- object_info("df")
  expect_identical(info$tag, "df")
  expect_identical(info$namespace, "default")
  expect_identical(info$class, "data.frame")
  expect_identical(info$type, "list")
  expect_identical(info$length, 2)
  expect_identical(info$dim, c(3L, 2L))
  expect_identical(info$description, "three rows")
  expect_false(info$zero_copy)
  expect_identical(info$storage, "inline")
  expect_s3_class(info$ctime, "POSIXct")
  m <- matrix(runif(4e4), 100)
  send_object(m, "m", namespace = "ns")
  im <- object_info("m", namespace = "ns")
  expect_identical(im$dim, c(100L, 400L))
  expect_true(im$zero_copy)
  expect_identical(im$storage, "file")
  expect_null(im$description)
  expect_gt(im$version, info$version)
  send_object(df[1, ], "df")
  expect_gt(object_info("df")$version, im$version)
  expect_null(object_info("df")$description)
  lst <- list_objects()
  expect_identical(names(lst), c("size", "ctime", "class", "description"))
  expect_identical(lst["df", "class"], "data.frame")
  send_object(1, "x", description = "caf\u00e9")
  expect_identical(list_objects()["x", "description"], "caf\u00e9")
  expect_true(is.na(list_objects()["df", "description"]))
  expect_error(object_info("nope"), class = "yaplr_not_found")
  expect_error(send_object(1, "x", description = c("a", "b")), class = "yaplr_bad_argument")
  expect_error(send_object(1, "x", description = NA_character_), class = "yaplr_bad_argument")
})

test_that("send_object() and send_objects() record class, type, length and dim as R says", {
  local_store()
  setClass("YaplrMetaTest", representation(x = "numeric"), where = environment())
  odd <- structure(list(1), class = "yaplr_odd_length")
  registerS3method("length", "yaplr_odd_length", function(x) stop("no length"),
                   envir = environment())
  registerS3method("dim", "yaplr_odd_length", function(x) stop("no dim"),
                   envir = environment())
  latin1_class <- structure(1, class = iconv("caf\xe9", "latin1", "latin1"))
  Encoding(attr(latin1_class, "class")) <- "latin1"
  bytes_class <- structure(1, class = "a\xffb")
  objects <- list(
    int = 1:3, dbl = c(1.5, NA), chr = c("a", NA), lgl = NA, cpl = 1i, raw = as.raw(1:3),
    mat = matrix(1:6, 2), arr = array(1:24, 2:4), arr1 = array(1:3), named = c(a = 1),
    df = data.frame(a = 1:2, b = c("x", "y")),
    fac = factor(c("u", "v")), lst = list(1, "a"), fun = function(x) x, env = new.env(),
    date = Sys.Date(), lt = as.POSIXlt("2026-01-01 10:00:00", tz = "UTC"),
    frm = y ~ x, expr = expression(a + b), sym = quote(a), call = quote(f(x)),
    s4 = new("YaplrMetaTest", x = 1), odd = odd, latin1 = latin1_class, bytes = bytes_class
  )
  send_objects(setNames(objects, paste0("batch_", names(objects))))
  for (n in names(objects)) send_object(objects[[n]], paste0("one_", n))
  for (n in names(objects)) {
    obj <- objects[[n]]
    # What R says, a failing length() or dim() method giving 0 or nothing.
    len <- tryCatch(length(obj), error = function(e) 0)
    dm <- tryCatch(dim(obj), error = function(e) NULL)
    want <- list(class = as.character(enc2utf8(class(obj))), type = typeof(obj),
                 length = as.numeric(len),
                 dim = if (is.null(dm)) numeric() else as.numeric(dm))
    for (tag in paste0(c("one_", "batch_"), n)) {
      got <- object_info(tag)
      for (field in c("type", "length")) {
        expect_identical(got[[field]], want[[field]], label = paste(tag, field))
      }
      expect_equal(as.numeric(got$dim), want$dim, label = paste(tag, "dim"))
      if (n != "bytes") expect_identical(got$class, want$class, label = paste(tag, "class"))
    }
  }
  expect_identical(object_info("one_mat")$class, c("matrix", "array"))
  expect_identical(object_info("one_arr1")$class, "array")
  expect_identical(object_info("one_dbl")$class, "numeric")
  expect_identical(object_info("one_lt")$length, 1)
  expect_identical(object_info("one_latin1")$class, "caf\u00e9")
  expect_identical(object_info("one_bytes")$class, "a<ff>b")
})
