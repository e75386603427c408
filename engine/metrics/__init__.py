"""Image-quality metrics (PSNR, SSIM) with one documented convention."""
