// Routine registration is forwarded to the Rust static library (extendr's
// wrappers and the glue's own .Call routines), which also keeps the linker
// from dropping it; then the ALTREP classes of the zero-copy vectors are
// registered.
void yaplr_register_routines(void *dll);
void yaplr_register_altrep(void *dll);

void R_init_yaplr(void *dll) {
    yaplr_register_routines(dll);
    yaplr_register_altrep(dll);
}
