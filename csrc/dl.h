/*
 * dl.h - what the run-time loaded libraries (cuda_shim.c, cufile_shim.c)
 * share: opening a library, saying why it could not be opened, and filling
 * its table of entry points.
 */
#ifndef MEGAIO_DL_H
#define MEGAIO_DL_H

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* dlopen(libname) for local use; on failure NULL, with dlerror's text in
 * err. */
static inline void *megaio_dlopen(const char *libname, char *err, size_t errlen)
{
	void *lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
	}
	return lib;
}

/* One entry point of a run-time loaded library: the name to ask the
 * library's own resolver for (cuGetProcAddress), or NULL; the exported
 * symbol for dlsym, used when there is no resolver or it has no answer;
 * and where the pointer goes in the library's table of entry points. */
struct megaio_symbol {
	const char *proc;
	const char *symbol;
	size_t offset;
};

/* A library's own resolver: name's entry point, or NULL. */
typedef void *(*megaio_resolver)(void *lib, const char *name);

/* Fills table with every entry point of syms from *lib. On a missing one,
 * closes the library (*lib = NULL), names the symbol in err and returns -2;
 * otherwise 0. */
static inline int megaio_load_symbols(void **lib, void *table, const struct megaio_symbol *syms, size_t n,
				      megaio_resolver resolve, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		void *fn = NULL;
		if (resolve && syms[i].proc)
			fn = resolve(*lib, syms[i].proc);
		if (!fn)
			fn = dlsym(*lib, syms[i].symbol);
		if (!fn) {
			snprintf(err, errlen, "%s", syms[i].symbol);
			dlclose(*lib);
			*lib = NULL;
			return -2;
		}
		memcpy((char *)table + syms[i].offset, &fn, sizeof(fn));
	}
	return 0;
}

#endif
