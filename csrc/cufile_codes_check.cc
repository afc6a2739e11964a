/*
 * cufile_codes_check.cc - compile-time check of the cuFile error codes that
 * megaio gives a meaning to (MEGAIO_CUFILE_CODES in cufile_shim.h) against
 * the installed cufile.h, aware that codes were added over cuFile's
 * versions: CU_FILE_BATCH_FULL (5037) appeared in 1.5.1, the "retry later"
 * codes (5039-5043) later; in 1.4, 5037 is CU_FILE_IO_MAX_ERROR, the end
 * marker of the list.
 *
 * cufile.h lists its codes in one X-macro, CUFILEOP_STATUS_ENTRIES. This
 * file expands it into a constexpr table and requires, for every code of
 * ours, either
 *   - the same code with the same name in cufile.h, or
 *   - a cufile.h that lacks both the name and the code (or holds the code
 *     only as its CU_FILE_IO_MAX_ERROR end marker, which no call returns):
 *     an older cuFile that never returns it, so our meaning is harmless.
 * A name at another code, or another name at our code, fails the build.
 * build.sh and the GPU bundle compile it with g++ -fsyntax-only wherever
 * cufile.h is found; it is never linked.
 */
#include <cufile.h>

extern "C" {
#include "cufile_shim.h"
}

namespace {

struct entry {
	int code;
	const char *name;
};

constexpr entry theirs[] = {
#define CUFILE_OP(code, name, string) {code, #name},
	CUFILEOP_STATUS_ENTRIES
#undef CUFILE_OP
};

constexpr entry ours[] = {
#define MEGAIO_ENTRY(code, name, kind) {code, #name},
	MEGAIO_CUFILE_CODES(MEGAIO_ENTRY)
#undef MEGAIO_ENTRY
};

constexpr bool same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

// The name cufile.h gives code, or nullptr.
constexpr const char *name_of(int code)
{
	for (const entry &e : theirs)
		if (e.code == code)
			return e.name;
	return nullptr;
}

// The code cufile.h gives name, or -1.
constexpr int code_of(const char *name)
{
	for (const entry &e : theirs)
		if (same(e.name, name))
			return e.code;
	return -1;
}

constexpr bool consistent(const entry &e)
{
	if (code_of(e.name) >= 0)
		return code_of(e.name) == e.code; // the name is there: same code
	const char *n = name_of(e.code);      // not there: the code is unused
	return n == nullptr || same(n, "CU_FILE_IO_MAX_ERROR");
}

// The index of the first entry of ours that cufile.h contradicts, or -1.
constexpr int first_inconsistent()
{
	for (int i = 0; i < int(sizeof(ours) / sizeof(ours[0])); i++)
		if (!consistent(ours[i]))
			return i;
	return -1;
}

// A failing static_assert names the index; instantiating Bad<i> also puts
// the entry's position into the compiler's message.
template <int I> struct Bad {
	static_assert(I < 0, "MEGAIO_CUFILE_CODES entry I (0-based) contradicts cufile.h");
};
constexpr int bad = first_inconsistent();
template struct Bad<bad>;

static_assert(name_of(0) && same(name_of(0), "CU_FILE_SUCCESS"), "CU_FILE_SUCCESS is 0");
static_assert(code_of("CU_FILE_IO_MAX_ERROR") > 5000, "cufile.h has an end marker");

} // namespace
