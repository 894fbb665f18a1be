/* vkc-context.c: the Vulkan instance, the choice of one physical device, the logical device
 * with its compute (and transfer) queue, the timeline semaphore every submission signals,
 * reusable command buffers, and the on-disk pipeline cache.
 *
 * Device choice (vkc_options_t.device): an index, a UUID or a name substring; by default the
 * first discrete GPU, then integrated, then virtual, then CPU. The choice is described in
 * vkc_device_info_t for the caller to log; this file never logs. Validation messages are
 * counted by a debug-utils messenger so that tests can fail on any of them.
 * Invariant: cmd->point <= ctx->timeline_value; a cmd is reusable once the semaphore has
 * reached its point. Called by the engine thread, tests and `moe bench kernels`. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu/vkc-internal.h"

int vkc_errno(VkResult r)
{
    switch (r) {
    case VK_SUCCESS:
        return 0;
    case VK_TIMEOUT:
    case VK_NOT_READY:
        return -ETIME;
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_FRAGMENTATION:
    case VK_ERROR_TOO_MANY_OBJECTS:
        return -ENOMEM;
    case VK_ERROR_DEVICE_LOST:
        return -EIO;
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_INCOMPATIBLE_DRIVER:
        return -ENODEV;
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
        return -ENOTSUP;
    case VK_ERROR_INVALID_EXTERNAL_HANDLE:
    case VK_ERROR_INVALID_SHADER_NV:
        return -EINVAL;
    default:
        return -EIO;
    }
}

void vkc_set_error(char *err, size_t size, const char *fmt, ...)
{
    if (!err || size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    vkc_ctx_t *ctx = user;
    ctx->n_messages++;
    snprintf(ctx->last_message, sizeof(ctx->last_message), "%s", data->pMessage);
    return VK_FALSE;
}

static bool has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkLayerProperties *p = calloc(n, sizeof(*p));
    bool found = false;
    if (p && vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(p[i].layerName, name);
    free(p);
    return found;
}

static bool has_device_extension(VkPhysicalDevice phys, const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof(*p));
    bool found = false;
    if (p && vkEnumerateDeviceExtensionProperties(phys, NULL, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = !strcmp(p[i].extensionName, name);
    free(p);
    return found;
}

static bool validation_wanted(const vkc_options_t *opt)
{
    if (opt && opt->validation >= 0)
        return opt->validation > 0;
    const char *e = getenv("MOE_VK_VALIDATION");
    return e && !strcmp(e, "1");
}

static int create_instance(vkc_ctx_t *ctx, bool validation, char *err, size_t err_size)
{
    const char *layers[1] = {"VK_LAYER_KHRONOS_validation"};
    const char *exts[1] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
    if (validation && !has_layer(layers[0])) {
        vkc_set_error(err, err_size, "validation requested but %s is not installed", layers[0]);
        return -ENOTSUP;
    }
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "moed",
        .apiVersion = VK_API_VERSION_1_2,
    };
    VkDebugUtilsMessengerCreateInfoEXT dm = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_debug_message,
        .pUserData = ctx,
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validation ? &dm : NULL, /* also catches messages of create/destroy */
        .pApplicationInfo = &app,
        .enabledLayerCount = validation ? 1 : 0,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = validation ? 1 : 0,
        .ppEnabledExtensionNames = exts,
    };
    VkResult vr = vkCreateInstance(&ci, NULL, &ctx->instance);
    if (vr != VK_SUCCESS) {
        vkc_set_error(err, err_size, "vkCreateInstance failed (VkResult %d)", vr);
        return vr == VK_ERROR_INCOMPATIBLE_DRIVER ? -ENODEV : vkc_errno(vr);
    }
    if (!validation)
        return 0;
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(ctx->instance,
                                                                  "vkCreateDebugUtilsMessengerEXT");
    ctx->destroy_messenger = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
        ctx->instance, "vkDestroyDebugUtilsMessengerEXT");
    ctx->cmd_label = (PFN_vkCmdInsertDebugUtilsLabelEXT)vkGetInstanceProcAddr(
        ctx->instance, "vkCmdInsertDebugUtilsLabelEXT");
    if (!create || !ctx->destroy_messenger) {
        vkc_set_error(err, err_size, "VK_EXT_debug_utils is missing");
        return -ENOTSUP;
    }
    vr = create(ctx->instance, &dm, NULL, &ctx->messenger);
    if (vr != VK_SUCCESS) {
        vkc_set_error(err, err_size, "vkCreateDebugUtilsMessengerEXT failed (VkResult %d)", vr);
        return vkc_errno(vr);
    }
    ctx->info.validation = true;
    return 0;
}

static enum vkc_device_type device_type(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return VKC_DEVICE_DISCRETE;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return VKC_DEVICE_INTEGRATED;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return VKC_DEVICE_VIRTUAL;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return VKC_DEVICE_CPU;
    default:
        return VKC_DEVICE_OTHER;
    }
}

static void uuid_hex(const uint8_t uuid[VK_UUID_SIZE], char out[33])
{
    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(out + 2 * i, 3, "%02x", uuid[i]);
}

/* Does device i (properties p, uuid hex) match the setting? */
static bool device_matches(const char *want, uint32_t i, const VkPhysicalDeviceProperties *p,
                           const char *uuid)
{
    char *end;
    errno = 0;
    unsigned long idx = strtoul(want, &end, 10);
    if (*want && !*end && !errno)
        return idx == i;
    char hex[64];
    size_t n = 0;
    for (const char *s = want; *s && n < sizeof(hex) - 1; s++)
        if (*s != '-')
            hex[n++] = (char)tolower((unsigned char)*s);
    hex[n] = 0;
    if (n == 32 && strspn(hex, "0123456789abcdef") == 32)
        return !strcmp(hex, uuid);
    return strcasestr(p->deviceName, want) != NULL;
}

/* Rank for the default choice: lower is better. */
static int device_rank(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
        return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
        return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
        return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
        return 3;
    default:
        return 4;
    }
}

static int choose_device(vkc_ctx_t *ctx, const char *want, char *err, size_t err_size)
{
    uint32_t n = 0;
    VkResult vr = vkEnumeratePhysicalDevices(ctx->instance, &n, NULL);
    if (vr != VK_SUCCESS || n == 0) {
        vkc_set_error(err, err_size, "no Vulkan device (VkResult %d)", vr);
        return -ENODEV;
    }
    VkPhysicalDevice *devs = calloc(n, sizeof(*devs));
    if (!devs)
        return -ENOMEM;
    vr = vkEnumeratePhysicalDevices(ctx->instance, &n, devs);
    int best = -1, best_rank = 99;
    for (uint32_t i = 0; i < n && vr >= 0; i++) {
        VkPhysicalDeviceIDProperties id = {.sType =
                                               VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
        VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                          .pNext = &id};
        vkGetPhysicalDeviceProperties2(devs[i], &p2);
        if (p2.properties.apiVersion < VK_API_VERSION_1_2)
            continue; /* timeline semaphores, buffer device address and subgroups are 1.2 */
        char uuid[33];
        uuid_hex(id.deviceUUID, uuid);
        if (want && *want) {
            if (device_matches(want, i, &p2.properties, uuid)) {
                best = (int)i;
                break;
            }
            continue;
        }
        int rank = device_rank(p2.properties.deviceType);
        if (rank < best_rank)
            best = (int)i, best_rank = rank;
    }
    if (best >= 0) {
        ctx->phys = devs[best];
        ctx->info.index = (uint32_t)best;
    }
    free(devs);
    if (best < 0) {
        vkc_set_error(err, err_size,
                      want && *want ? "no Vulkan 1.2 device matches \"%s\""
                                    : "no Vulkan 1.2 device%s",
                      want ? want : "");
        return -ENODEV;
    }
    return 0;
}

/* Fill ctx->info from the chosen device's properties (extensions decided by the caller). */
static void describe_device(vkc_ctx_t *ctx)
{
    vkc_device_info_t *in = &ctx->info;
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT hostp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
        .pNext = in->host_import ? &hostp : NULL};
    VkPhysicalDeviceVulkan11Properties v11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES, .pNext = &m3};
    VkPhysicalDeviceVulkan12Properties v12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES, .pNext = &v11};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &v12};
    vkGetPhysicalDeviceProperties2(ctx->phys, &p2);
    const VkPhysicalDeviceLimits *l = &p2.properties.limits;
    snprintf(in->name, sizeof(in->name), "%s", p2.properties.deviceName);
    size_t dn = strnlen(v12.driverName, sizeof(v12.driverName));
    memcpy(in->driver, v12.driverName, dn < sizeof(in->driver) ? dn : sizeof(in->driver) - 1);
    in->driver[dn < sizeof(in->driver) ? dn : sizeof(in->driver) - 1] = 0;
    size_t used = strlen(in->driver);
    if (used + 2 < sizeof(in->driver)) {
        in->driver[used++] = ' ';
        size_t di = strnlen(v12.driverInfo, sizeof(v12.driverInfo));
        size_t room = sizeof(in->driver) - used - 1;
        memcpy(in->driver + used, v12.driverInfo, di < room ? di : room);
        in->driver[used + (di < room ? di : room)] = 0;
    }
    uuid_hex(v11.deviceUUID, in->uuid);
    in->vendor_id = p2.properties.vendorID;
    in->device_id = p2.properties.deviceID;
    in->api_version = p2.properties.apiVersion;
    in->type = device_type(p2.properties.deviceType);
    in->subgroup_size = v11.subgroupSize;
    in->subgroup_arithmetic =
        (v11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
        (v11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    in->max_allocation = m3.maxMemoryAllocationSize;
    in->max_storage_range = l->maxStorageBufferRange;
    in->storage_offset_alignment = l->minStorageBufferOffsetAlignment;
    in->import_alignment = in->host_import ? hostp.minImportedHostPointerAlignment : 0;
    for (int i = 0; i < 3; i++)
        in->max_workgroup_count[i] = l->maxComputeWorkGroupCount[i];
    in->max_workgroup_invocations = l->maxComputeWorkGroupInvocations;
    in->max_shared_memory = l->maxComputeSharedMemorySize;
}

static const char *type_name(enum vkc_device_type t)
{
    static const char *names[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    return (unsigned)t < 5 ? names[t] : "?";
}

int vkc_device_info_format(const vkc_device_info_t *in, char *buf, size_t size)
{
    char heaps[512] = "";
    size_t o = 0;
    for (uint32_t i = 0; i < in->n_heaps && o < sizeof(heaps); i++)
        o += (size_t)snprintf(heaps + o, sizeof(heaps) - o, "%s%.1f GiB%s (budget %.1f)",
                              i ? ", " : "", in->heaps[i].size / 1073741824.0,
                              in->heaps[i].device_local ? " device-local" : "",
                              in->heaps[i].budget / 1073741824.0);
    return snprintf(
        buf, size,
        "device %u \"%s\" (%s, %s), Vulkan %u.%u.%u, uuid %s, subgroup %u%s, "
        "heaps: %s; max allocation %llu MiB, max storage range %llu MiB%s%s%s%s%s",
        in->index, in->name, type_name(in->type), in->driver, VK_API_VERSION_MAJOR(in->api_version),
        VK_API_VERSION_MINOR(in->api_version), VK_API_VERSION_PATCH(in->api_version), in->uuid,
        in->subgroup_size, in->subgroup_arithmetic ? " (arithmetic)" : "", heaps,
        (unsigned long long)(in->max_allocation >> 20),
        (unsigned long long)(in->max_storage_range >> 20),
        in->memory_budget ? ", memory budget" : "", in->host_import ? ", host import" : "",
        in->buffer_device_address ? ", buffer device address" : "",
        in->unified_memory ? ", unified memory" : "",
        in->separate_transfer_queue ? ", transfer queue" : "");
}

static void find_queues(vkc_ctx_t *ctx)
{
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, NULL);
    VkQueueFamilyProperties q[32];
    n = n > 32 ? 32 : n;
    vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &n, q);
    ctx->queue_family = ctx->transfer_family = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        VkQueueFlags f = q[i].queueFlags;
        /* prefer a compute family without graphics (async compute), else any compute */
        if ((f & VK_QUEUE_COMPUTE_BIT) &&
            (ctx->queue_family == UINT32_MAX || !(f & VK_QUEUE_GRAPHICS_BIT)))
            if (ctx->queue_family == UINT32_MAX ||
                (q[ctx->queue_family].queueFlags & VK_QUEUE_GRAPHICS_BIT))
                ctx->queue_family = i;
        if ((f & VK_QUEUE_TRANSFER_BIT) && !(f & (VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT)) &&
            ctx->transfer_family == UINT32_MAX)
            ctx->transfer_family = i;
    }
}

static int create_device(vkc_ctx_t *ctx, char *err, size_t err_size)
{
    vkc_device_info_t *in = &ctx->info;
    const char *exts[4];
    uint32_t n_ext = 0;
    if (has_device_extension(ctx->phys, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME))
        exts[n_ext++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME, in->memory_budget = true;
    if (has_device_extension(ctx->phys, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME))
        exts[n_ext++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME, in->host_import = true;
    describe_device(ctx);

    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f12};
    vkGetPhysicalDeviceFeatures2(ctx->phys, &f2);
    if (!f12.timelineSemaphore) {
        vkc_set_error(err, err_size, "%s lacks timeline semaphores", in->name);
        return -ENOTSUP;
    }
    VkPhysicalDeviceVulkan12Features want12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .timelineSemaphore = VK_TRUE,
        .bufferDeviceAddress = f12.bufferDeviceAddress,
    };
    VkPhysicalDeviceFeatures2 want = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                      .pNext = &want12};
    want.features.shaderInt64 = f2.features.shaderInt64;
    in->buffer_device_address = f12.bufferDeviceAddress && f2.features.shaderInt64;
    want12.bufferDeviceAddress = in->buffer_device_address;

    find_queues(ctx);
    if (ctx->queue_family == UINT32_MAX) {
        vkc_set_error(err, err_size, "%s has no compute queue", in->name);
        return -ENOTSUP;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci[2] = {
        {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
         .queueFamilyIndex = ctx->queue_family,
         .queueCount = 1,
         .pQueuePriorities = &prio},
        {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
         .queueFamilyIndex = ctx->transfer_family,
         .queueCount = 1,
         .pQueuePriorities = &prio},
    };
    in->separate_transfer_queue = ctx->transfer_family != UINT32_MAX;
    VkDeviceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &want,
        .queueCreateInfoCount = in->separate_transfer_queue ? 2 : 1,
        .pQueueCreateInfos = qci,
        .enabledExtensionCount = n_ext,
        .ppEnabledExtensionNames = exts,
    };
    VkResult vr = vkCreateDevice(ctx->phys, &ci, NULL, &ctx->device);
    if (vr != VK_SUCCESS) {
        vkc_set_error(err, err_size, "vkCreateDevice(%s) failed (VkResult %d)", in->name, vr);
        return vkc_errno(vr);
    }
    vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    ctx->transfer_queue = ctx->queue;
    if (in->separate_transfer_queue)
        vkGetDeviceQueue(ctx->device, ctx->transfer_family, 0, &ctx->transfer_queue);
    if (in->host_import)
        ctx->host_pointer_props = (PFN_vkGetMemoryHostPointerPropertiesEXT)vkGetDeviceProcAddr(
            ctx->device, "vkGetMemoryHostPointerPropertiesEXT");
    return 0;
}

static int create_sync(vkc_ctx_t *ctx)
{
    VkSemaphoreTypeCreateInfo st = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
                                    .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE};
    VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &st};
    VkResult vr = vkCreateSemaphore(ctx->device, &sci, NULL, &ctx->timeline);
    if (vr != VK_SUCCESS)
        return vkc_errno(vr);
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = ctx->queue_family,
    };
    return vkc_errno(vkCreateCommandPool(ctx->device, &pci, NULL, &ctx->pool));
}

/* Load <cache_dir>/moed-pipelines-<uuid>.bin when present; the driver checks the header
 * (vendor, device, cache UUID) and ignores data from another driver version. */
static int create_pipeline_cache(vkc_ctx_t *ctx, const char *dir)
{
    void *data = NULL;
    size_t size = 0;
    if (dir && *dir) {
        if (asprintf(&ctx->cache_path, "%s/moed-pipelines-%s.bin", dir, ctx->info.uuid) < 0) {
            ctx->cache_path = NULL;
            return -ENOMEM;
        }
        FILE *f = fopen(ctx->cache_path, "rbe");
        if (f) {
            if (fseek(f, 0, SEEK_END) == 0) {
                long len = ftell(f);
                if (len > 0 && len < (1L << 30) && fseek(f, 0, SEEK_SET) == 0 &&
                    (data = malloc((size_t)len)) && fread(data, 1, (size_t)len, f) == (size_t)len)
                    size = (size_t)len;
            }
            fclose(f);
        }
    }
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                    .initialDataSize = size,
                                    .pInitialData = size ? data : NULL};
    VkResult vr = vkCreatePipelineCache(ctx->device, &ci, NULL, &ctx->pipeline_cache);
    free(data);
    ctx->info.pipeline_cache_loaded = vr == VK_SUCCESS && size > 0;
    return vkc_errno(vr);
}

int vkc_ctx_save_pipeline_cache(vkc_ctx_t *ctx)
{
    if (!ctx->cache_path || !ctx->pipeline_cache)
        return 0;
    size_t size = 0;
    VkResult vr = vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size, NULL);
    if (vr != VK_SUCCESS)
        return vkc_errno(vr);
    void *data = malloc(size ? size : 1);
    if (!data)
        return -ENOMEM;
    int r = vkc_errno(vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size, data));
    char *tmp = NULL;
    if (r == 0 && asprintf(&tmp, "%s.tmp", ctx->cache_path) < 0)
        tmp = NULL, r = -ENOMEM;
    if (r == 0) {
        /* write a temporary file and rename it, so a crash never leaves half a cache */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            r = -errno;
        else {
            if (write(fd, data, size) != (ssize_t)size)
                r = -EIO;
            if (close(fd) < 0 && r == 0)
                r = -errno;
            if (r == 0 && rename(tmp, ctx->cache_path) < 0)
                r = -errno;
            if (r < 0)
                unlink(tmp);
        }
    }
    free(tmp);
    free(data);
    return r;
}

int vkc_ctx_new(const vkc_options_t *opt, vkc_ctx_t **ret, char *err, size_t err_size)
{
    vkc_set_error(err, err_size, "%s", "");
    vkc_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    int r = create_instance(ctx, validation_wanted(opt), err, err_size);
    if (r < 0)
        goto fail;
    r = choose_device(ctx, opt ? opt->device : NULL, err, err_size);
    if (r < 0)
        goto fail;
    r = create_device(ctx, err, err_size);
    if (r < 0)
        goto fail;
    r = create_sync(ctx);
    if (r < 0) {
        vkc_set_error(err, err_size, "creating the timeline semaphore or command pool: %s",
                      strerror(-r));
        goto fail;
    }
    ctx->device_limit = opt ? opt->device_limit : 0;
    vkc_profile_init(ctx);
    r = vkc_memory_init(ctx);
    if (r < 0) {
        vkc_set_error(err, err_size, "%s has no usable memory types", ctx->info.name);
        goto fail;
    }
    r = create_pipeline_cache(ctx, opt ? opt->cache_dir : NULL);
    if (r < 0) {
        vkc_set_error(err, err_size, "creating the pipeline cache: %s", strerror(-r));
        goto fail;
    }
    *ret = ctx;
    return 0;
fail:
    vkc_ctx_free(ctx);
    return r;
}

vkc_ctx_t *vkc_ctx_free(vkc_ctx_t *ctx)
{
    if (!ctx)
        return NULL;
    if (ctx->device) {
        vkDeviceWaitIdle(ctx->device);
        vkc_profile_report(ctx);
        vkc_ctx_save_pipeline_cache(ctx); /* best effort: a cache is an optimisation */
        vkc_pipelines_fini(ctx);
        if (ctx->pipeline_cache)
            vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
        vkc_memory_fini(ctx);
        if (ctx->pool)
            vkDestroyCommandPool(ctx->device, ctx->pool, NULL);
        if (ctx->timeline)
            vkDestroySemaphore(ctx->device, ctx->timeline, NULL);
        vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->messenger)
        ctx->destroy_messenger(ctx->instance, ctx->messenger, NULL);
    if (ctx->instance)
        vkDestroyInstance(ctx->instance, NULL);
    free(ctx->cache_path);
    free(ctx);
    return NULL;
}

const vkc_device_info_t *vkc_ctx_info(const vkc_ctx_t *ctx)
{
    return &ctx->info;
}

uint64_t vkc_ctx_validation_messages(const vkc_ctx_t *ctx, char *last, size_t size)
{
    if (last && size)
        snprintf(last, size, "%s", ctx->last_message);
    return ctx->n_messages;
}

/* ---- command buffers -------------------------------------------------------------------- */

int vkc_cmd_new(vkc_ctx_t *ctx, vkc_cmd_t **ret)
{
    vkc_cmd_t *cmd = calloc(1, sizeof(*cmd));
    if (!cmd)
        return -ENOMEM;
    cmd->ctx = ctx;
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = ctx->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    int r = vkc_errno(vkAllocateCommandBuffers(ctx->device, &ai, &cmd->cb));
    if (r < 0) {
        free(cmd);
        return r;
    }
    if ((r = vkc_profile_cmd_new(cmd)) < 0) {
        vkc_cmd_free(cmd);
        return r;
    }
    *ret = cmd;
    return 0;
}

vkc_cmd_t *vkc_cmd_free(vkc_cmd_t *cmd)
{
    if (!cmd)
        return NULL;
    vkc_ctx_t *ctx = cmd->ctx;
    vkc_cmd_wait(cmd, UINT64_MAX);
    for (vkc_dpool_t *p = cmd->dpools, *next; p; p = next) {
        next = p->next;
        vkDestroyDescriptorPool(ctx->device, p->pool, NULL);
        free(p);
    }
    vkc_profile_cmd_free(cmd);
    vkFreeCommandBuffers(ctx->device, ctx->pool, 1, &cmd->cb);
    free(cmd);
    return NULL;
}

int vkc_cmd_wait(vkc_cmd_t *cmd, uint64_t timeout_ns)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (cmd->point == 0)
        return 0;
    if (ctx->lost)
        return -EIO;
    VkSemaphoreWaitInfo wi = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
                              .semaphoreCount = 1,
                              .pSemaphores = &ctx->timeline,
                              .pValues = &cmd->point};
    VkResult vr = vkWaitSemaphores(ctx->device, &wi, timeout_ns);
    if (vr == VK_ERROR_DEVICE_LOST)
        ctx->lost = true;
    if (vr == VK_SUCCESS) {
        cmd->point = 0;
        vkc_profile_collect(cmd);
    }
    return vkc_errno(vr);
}

int vkc_cmd_begin(vkc_cmd_t *cmd)
{
    vkc_ctx_t *ctx = cmd->ctx;
    int r = vkc_cmd_wait(cmd, UINT64_MAX);
    if (r < 0)
        return r;
    /* a recording abandoned after an error (the caller never submitted it) is ended and
     * dropped: a command buffer must not be begun while it records (VUID 00049) */
    if (cmd->recording) {
        vkEndCommandBuffer(cmd->cb);
        cmd->recording = false;
    }
    /* the descriptor sets of the previous recording are dead once it completed */
    for (vkc_dpool_t *p = cmd->dpools; p; p = p->next)
        vkResetDescriptorPool(ctx->device, p->pool, 0);
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    r = vkc_errno(vkBeginCommandBuffer(cmd->cb, &bi)); /* implicitly resets (pool flag) */
    cmd->recording = r == 0;
    if (cmd->recording)
        vkc_profile_begin(cmd);
    cmd->error = 0;
    return r;
}

int vkc_cmd_fail(vkc_cmd_t *cmd, int r)
{
    if (r < 0 && cmd->error == 0)
        cmd->error = r;
    return r;
}

int vkc_cmd_submit(vkc_cmd_t *cmd, uint64_t *ret_point)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (!cmd->recording)
        return -EINVAL;
    cmd->recording = false;
    /* results become visible to the host (mapped readback) once the submission completes */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask =
                              VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(cmd->cb,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    int r = vkc_errno(vkEndCommandBuffer(cmd->cb));
    if (r == 0 && cmd->error < 0)
        r = cmd->error;
    if (r < 0)
        return r;
    if (ctx->lost)
        return -EIO;
    uint64_t value = ctx->timeline_value + 1;
    VkTimelineSemaphoreSubmitInfo ts = {.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                        .signalSemaphoreValueCount = 1,
                                        .pSignalSemaphoreValues = &value};
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .pNext = &ts,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &cmd->cb,
                       .signalSemaphoreCount = 1,
                       .pSignalSemaphores = &ctx->timeline};
    VkResult vr = vkQueueSubmit(ctx->queue, 1, &si, VK_NULL_HANDLE);
    if (vr == VK_ERROR_DEVICE_LOST)
        ctx->lost = true;
    if (vr != VK_SUCCESS)
        return vkc_errno(vr);
    ctx->timeline_value = value;
    cmd->point = value;
    if (ret_point)
        *ret_point = value;
    return 0;
}

int vkc_cmd_submit_wait(vkc_cmd_t *cmd)
{
    int r = vkc_cmd_submit(cmd, NULL);
    return r < 0 ? r : vkc_cmd_wait(cmd, UINT64_MAX);
}

void vkc_cmd_barrier(vkc_cmd_t *cmd, const char *why)
{
    vkc_ctx_t *ctx = cmd->ctx;
    if (ctx->cmd_label && why) {
        VkDebugUtilsLabelEXT label = {.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_LABEL_EXT,
                                      .pLabelName = why};
        ctx->cmd_label(cmd->cb, &label);
    }
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    VkPipelineStageFlags stages =
        VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    vkCmdPipelineBarrier(cmd->cb, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
}
