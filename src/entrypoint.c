// Routine registration is forwarded to the Rust static library, which
// also keeps the linker from dropping it; then the ALTREP classes of the
// zero-copy vectors are registered.
void R_init_yaplr_extendr(void *dll);
void yaplr_register_altrep(void *dll);

void R_init_yaplr(void *dll) {
    R_init_yaplr_extendr(dll);
    yaplr_register_altrep(dll);
}
