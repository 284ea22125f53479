# Installs the shared library, as R would, and the yaplrd helper program
# into the package's bin/ directory.
files <- Sys.glob(paste0("*", SHLIB_EXT))
dest <- file.path(R_PACKAGE_DIR, paste0("libs", R_ARCH))
dir.create(dest, recursive = TRUE, showWarnings = FALSE)
file.copy(files, dest, overwrite = TRUE)
if (file.exists("symbols.rds")) {
  file.copy("symbols.rds", dest, overwrite = TRUE)
}
bin <- file.path(R_PACKAGE_DIR, "bin")
dir.create(bin, recursive = TRUE, showWarnings = FALSE)
if (!file.exists("yaplrd")) stop("the yaplrd helper was not built")
file.copy("yaplrd", bin, overwrite = TRUE)
Sys.chmod(file.path(bin, "yaplrd"), "755")
