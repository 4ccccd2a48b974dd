/* Umbrella header of the GatewayABI target: the plugin contract is pixtrack_gateway.h alone. */
#ifndef PIXTRACK_GATEWAY_ABI_UMBRELLA_H
#define PIXTRACK_GATEWAY_ABI_UMBRELLA_H
#include "pixtrack_gateway.h"
#endif
