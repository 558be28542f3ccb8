/* SPDX-License-Identifier: GPL-2.0 */
#ifndef MYDRV_H
#define MYDRV_H

#include <linux/fs.h>

extern const struct file_operations mydrv_fops;

#endif /* MYDRV_H */
