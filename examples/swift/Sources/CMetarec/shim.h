/* Pulls in the installed C header for the CMetarec module (see module.modulemap). */
#include <metarec.h>
