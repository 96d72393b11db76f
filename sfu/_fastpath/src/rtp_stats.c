/* placeholder: filled by the loss-recovery work */
