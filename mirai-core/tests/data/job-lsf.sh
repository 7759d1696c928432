#!/bin/sh
#BSUB -J mirai[1-4]
#BSUB -W 60
exec mirai-daemon tcp://10.0.0.1:5555 --idletime 60000
